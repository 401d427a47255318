"""The audit log: admin actions through HTTP and the CLI each leave one entry (actor,
role, address, user agent, request id, metadata), committed with the action; listed
newest first with filters and a cursor; no route changes or deletes one, and the table
itself refuses UPDATE and DELETE on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, running_api
from playback_support import packaged_asset
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from mediamill.config.settings import get_settings
from mediamill.schemas.audit import CLI_ACTOR, AuditAction
from mediamill.storage import audit
from mediamill.storage.db import Database

pytestmark = pytest.mark.integration


@pytest.fixture
def admin_api(embedded_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("MEDIAMILL_WEBHOOK_ALLOW_HOSTS", "hooks.internal")
    get_settings.cache_clear()
    with running_api(run_worker=False) as api:
        yield api
    get_settings.cache_clear()


def entries(api: Api, **query: str) -> list[dict]:
    r = api.client.get("/v0/audit-logs", params=query, headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_every_admin_action_leaves_one_entry(admin_api: Api) -> None:
    api, client = admin_api, admin_api.client
    me = api.admin["x-client-id"]
    made = client.post(
        "/v0/webhooks",
        json={"url": "https://hooks.internal/in", "events": ["*"]},
        headers={**api.admin, "User-Agent": "ops-console/2.1"},
    )
    assert made.status_code == 201, made.text
    hook = made.json()["id"]
    request_id = made.headers["x-request-id"]
    client.patch(f"/v0/webhooks/{hook}", json={"description": "main"}, headers=api.admin)
    client.post(f"/v0/webhooks/{hook}/rotate-secret", headers=api.admin)
    client.delete(f"/v0/webhooks/{hook}", headers=api.admin)
    asset = packaged_asset(api.rt)
    mapped = client.post(
        "/v0/legacy/tracks/track-9/originalAssets", json=[asset], headers=api.admin
    )
    assert mapped.status_code == 201, mapped.text
    assert client.delete(f"/v0/assets/{asset}", headers=api.admin).status_code == 200
    r = client.post("/v0/legacy/assets", json={"legacyTrackToken": "tok-1"}, headers=api.admin)
    assert r.status_code == 201, r.text
    r = client.put(
        "/v0/legacy/assets/trackToken:tok-1", json={"originalFileName": "a.wav"}, headers=api.admin
    )
    assert r.status_code == 202, r.text
    upload = client.post(
        "/v0/uploads",
        json={"filename": "a.wav", "contentType": "audio/wav", "sizeBytes": 10},
        headers=api.admin,
    ).json()
    assert client.delete(f"/v0/uploads/{upload['id']}", headers=api.admin).status_code == 200
    listed = entries(api)
    assert [e["action"] for e in listed] == [
        "upload.cancelled",
        "legacyAsset.updated",
        "legacyAsset.created",
        "asset.deleted",
        "legacyTrack.mapped",
        "webhook.deleted",
        "webhook.secretRotated",
        "webhook.updated",
        "webhook.created",
    ]
    created = listed[-1]
    assert set(created) == {
        "id",
        "action",
        "actorId",
        "actorRole",
        "resourceType",
        "resourceId",
        "ipAddress",
        "userAgent",
        "requestId",
        "metadata",
        "createdAt",
    }
    assert (created["actorId"], created["actorRole"], created["resourceType"]) == (
        me,
        "admin",
        "webhook",
    )
    assert (created["resourceId"], created["userAgent"], created["requestId"]) == (
        hook,
        "ops-console/2.1",
        request_id,
    )
    assert created["ipAddress"] == "testclient"
    assert created["metadata"] == {"url": "https://hooks.internal/in", "events": ["*"]}
    assert listed[-2]["metadata"] == {"changed": ["description"]}
    assert listed[4]["metadata"] == {"originalAssetIds": [asset]}
    assert listed[3]["resourceId"] == asset
    assert listed[1]["metadata"] == {"changed": ["originalFileName"]}
    one = client.get(f"/v0/audit-logs/{created['id']}", headers=api.admin)
    assert one.json() == created
    assert client.get("/v0/audit-logs/nope", headers=api.admin).status_code == 404


def test_a_refused_action_leaves_no_entry(admin_api: Api) -> None:
    api = admin_api
    r = api.client.delete("/v0/webhooks/unknown", headers=api.admin)
    assert r.status_code == 404
    r = api.client.post("/v0/jobs/unknown/cancel", headers=api.admin)
    assert r.status_code == 404
    assert entries(api) == []


def test_filters_cursor_and_keys(admin_api: Api) -> None:
    api = admin_api
    for i in range(5):
        api.client.post("/v0/legacy/assets", json={"legacyTrackToken": f"t{i}"}, headers=api.admin)
    api.client.put(
        "/v0/legacy/assets/trackToken:t0", json={"originalFileName": "x.wav"}, headers=api.admin
    )
    assert len(entries(api, action="legacyAsset.")) == 6
    assert len(entries(api, action="legacyAsset.created")) == 5
    assert entries(api, action="webhook.") == []
    assert [e["resourceId"] for e in entries(api, resourceType="legacyAsset", resourceId="t3")] == [
        "t3"
    ]
    assert entries(api, actorId="someone-else") == []
    assert entries(api, action="%") == []  # a prefix, not a pattern
    seen, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v0/audit-logs", params=query, headers=api.admin).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in entries(api, limit="100")] and len(seen) == 6
    newest = entries(api)[0]["createdAt"]
    assert entries(api, **{"from": newest})[0]["createdAt"] == newest
    assert api.client.get("/v0/audit-logs", headers=api.read).status_code == 403
    naive = api.client.get(
        "/v0/audit-logs", params={"from": "2026-01-01T00:00:00"}, headers=api.admin
    )
    assert naive.status_code == 400
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        r = api.client.get("/v0/audit-logs", params={"from": value}, headers=api.admin)
        assert r.status_code == 400, r.text


def test_no_route_changes_or_deletes_an_entry(admin_api: Api) -> None:
    schema = admin_api.client.app.openapi()  # type: ignore[attr-defined]
    methods = {
        method
        for path, ops in schema["paths"].items()
        if path.startswith("/v0/audit-logs")
        for method in ops
    }
    assert methods == {"get"}
    api = admin_api
    api.client.post("/v0/legacy/assets", json={"legacyTrackToken": "z"}, headers=api.admin)
    entry = entries(api)[0]["id"]
    for method in ("DELETE", "PUT", "PATCH"):
        r = api.client.request(method, f"/v0/audit-logs/{entry}", headers=api.admin)
        assert r.status_code == 405
    assert entries(api)[0]["id"] == entry


def test_the_table_refuses_update_and_delete(database_url: str | None, tmp_path: Path) -> None:
    db = Database(database_url or f"sqlite:///{tmp_path / 'audit.db'}")
    db.upgrade()
    try:
        with db.session() as s:
            entry = audit.record(s, CLI_ACTOR, AuditAction.API_KEY_CREATED, "apiKey", "k1")
        for statement in (
            "UPDATE audit_log SET action = 'forged'",
            "DELETE FROM audit_log",
            *(["TRUNCATE audit_log"] if database_url else []),
        ):
            with pytest.raises(DatabaseError, match="append-only"), db.session() as s:
                s.execute(text(statement))
        with db.session() as s:
            assert audit.get_entry(s, entry).action == "apiKey.created"
    finally:
        db.dispose()


def test_keys_created_and_revoked_by_the_cli_are_logged(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    cli = [sys.executable, "-m", "mediamill"]
    made = subprocess.run(
        [*cli, "keys", "create", "--scope", "read", "--name", "grafana", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    client_id = json.loads(made.stdout)["clientId"]
    subprocess.run([*cli, "keys", "revoke", client_id], env=env, capture_output=True, check=True)
    db = Database(f"sqlite:///{tmp_path / 'data' / 'mediamill.db'}")
    try:
        with db.session() as s:
            listed, _ = audit.list_entries(s)
        assert [(e.action, e.resource_id, e.actor_role) for e in listed] == [
            ("apiKey.revoked", client_id, "operator"),
            ("apiKey.created", client_id, "operator"),
        ]
        assert listed[1].metadata == {"scope": "read", "name": "grafana"}
    finally:
        db.dispose()
