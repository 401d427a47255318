"""Webhook endpoint routes on the embedded API: CRUD, secrets shown once, rotation,
registration-time SSRF checks, the delivery log, redelivery and the test ping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from api_support import Api, running_api

from mediamill.config.settings import get_settings
from mediamill.storage.models import WebhookDeliveryRow, WebhookEndpointRow
from mediamill.storage.webhook_deliveries import active_secrets

pytestmark = pytest.mark.integration

PUBLIC = "https://93.184.215.14/hooks/mediamill"  # a literal public address: no DNS needed
ENDPOINT_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "status",
    "secretHint",
    "createdAt",
    "updatedAt",
    "lastDeliveryAt",
    "disabledReason",
}
DELIVERY_FIELDS = {
    "id",
    "eventId",
    "eventType",
    "status",
    "attemptCount",
    "httpStatus",
    "responseExcerpt",
    "durationMs",
    "nextRetryAt",
    "createdAt",
    "deliveredAt",
    "error",
}


@pytest.fixture
def wh(
    database_url: str | None, embedded_env, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    """The API with `localhost` allow-listed and no in-process worker (so no dispatcher
    changes the deliveries these tests look at): on the embedded SQLite default, and on
    a fresh PostgreSQL database."""
    monkeypatch.setenv("MEDIAMILL_WEBHOOK_ALLOW_HOSTS", "localhost, hooks.internal")
    if database_url is not None:
        from mediamill.storage.db import database_for

        database_for(database_url).upgrade()
        monkeypatch.setenv("MEDIAMILL_DATABASE_URL", database_url)
    get_settings.cache_clear()
    with running_api(run_worker=False) as running:
        yield running


def create(wh: Api, url: str = PUBLIC, events: list[str] | None = None, **extra) -> dict:
    body = {"url": url, "events": events or ["asset.ready", "job.failed"], **extra}
    r = wh.client.post("/v0/webhooks", json=body, headers=wh.admin)
    assert r.status_code == 201, r.text
    return r.json()


def refused(wh: Api, url: str) -> str:
    r = wh.client.post("/v0/webhooks", json={"url": url, "events": ["*"]}, headers=wh.admin)
    assert r.status_code == 400, r.text
    assert r.json()["name"] == "InvalidRequestError"
    return r.json()["message"]


def add_delivery(wh: Api, endpoint_id: str, status: str, created_at: datetime, **extra) -> str:
    delivery_id = str(uuid.uuid4())
    with wh.rt.db.session() as s:
        s.add(
            WebhookDeliveryRow(
                id=delivery_id,
                endpoint_id=endpoint_id,
                event_id=str(uuid.uuid4()),
                event_type=extra.pop("event_type", "asset.ready"),
                status=status,
                attempt_count=extra.pop("attempt_count", 1),
                created_at=created_at,
                modified_at=created_at,
                **extra,
            )
        )
    return delivery_id


# ---- endpoints ----------------------------------------------------------------------------


def test_create_shows_the_secret_once_then_only_the_hint(wh: Api) -> None:
    created = create(wh, description="CMS")
    assert set(created) >= ENDPOINT_FIELDS | {"secret"}
    secret = created["secret"]
    assert secret.startswith("whsec_")
    import base64

    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["secretHint"] == secret[-4:]
    assert created["status"] == "active" and created["disabledReason"] is None
    assert created["events"] == ["asset.ready", "job.failed"]
    assert created["description"] == "CMS"

    got = wh.client.get(f"/v0/webhooks/{created['id']}", headers=wh.read)
    assert got.status_code == 200
    assert set(got.json()) == ENDPOINT_FIELDS
    assert got.json()["secretHint"] == secret[-4:]
    listed = wh.client.get("/v0/webhooks", headers=wh.read).json()
    assert secret not in str(listed) and secret not in got.text
    assert [w["id"] for w in listed["data"]] == [created["id"]]
    assert listed["nextCursor"] is None


def test_unknown_event_type_and_bad_bodies_are_400(wh: Api) -> None:
    for body in (
        {"url": PUBLIC, "events": ["asset.exploded"]},
        {"url": PUBLIC, "events": []},
        {"url": PUBLIC},
        {"events": ["*"]},
        {"url": PUBLIC, "events": ["*"], "description": "x" * 1001},
        {"url": "https://93.184.215.14/" + "a" * 2100, "events": ["*"]},
    ):
        r = wh.client.post("/v0/webhooks", json=body, headers=wh.admin)
        assert r.status_code == 400, (body, r.text)
    r = wh.client.post(
        "/v0/webhooks", json={"url": PUBLIC, "events": ["asset.exploded"]}, headers=wh.admin
    )
    assert "asset.exploded" in r.json()["message"]
    every = create(wh, events=["*"])
    assert every["events"] == ["*"]


def test_list_is_paginated_newest_first(wh: Api) -> None:
    ids = [create(wh)["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = wh.client.get("/v0/webhooks", params=params, headers=wh.read).json()
        assert len(page["data"]) <= 2
        seen += [w["id"] for w in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    r = wh.client.get("/v0/webhooks", params={"cursor": "nope"}, headers=wh.read)
    assert r.status_code == 400
    r = wh.client.get("/v0/webhooks", params={"limit": 0}, headers=wh.read)
    assert r.status_code == 400


def test_patch_changes_only_what_is_given(wh: Api) -> None:
    hook = create(wh, description="first")
    url = f"/v0/webhooks/{hook['id']}"
    r = wh.client.patch(url, json={"events": ["rendition.ready", "*"]}, headers=wh.admin)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["rendition.ready", "*"]
    assert r.json()["description"] == "first" and r.json()["url"] == PUBLIC
    r = wh.client.patch(url, json={"status": "disabled", "description": None}, headers=wh.admin)
    assert r.json()["status"] == "disabled" and r.json()["disabledReason"]
    assert r.json()["description"] is None
    r = wh.client.patch(url, json={"status": "active"}, headers=wh.admin)
    assert r.json()["status"] == "active" and r.json()["disabledReason"] is None
    new_url = "https://93.184.215.15/other"
    r = wh.client.patch(url, json={"url": new_url}, headers=wh.admin)
    assert r.json()["url"] == new_url
    assert "secret" not in r.json()
    for bad in (
        {"status": "paused"},
        {"events": ["nope"]},
        {"url": None},
        {"url": "https://10.0.0.1/x"},
        {"url": "http://93.184.215.14/x"},
    ):
        r = wh.client.patch(url, json=bad, headers=wh.admin)
        assert r.status_code == 400, (bad, r.text)
    assert wh.client.get(url, headers=wh.read).json()["url"] == new_url
    r = wh.client.patch("/v0/webhooks/nope", json={"description": "x"}, headers=wh.admin)
    assert r.status_code == 404


def test_delete_then_404(wh: Api) -> None:
    hook = create(wh)
    add_delivery(wh, hook["id"], "delivered", datetime.now(UTC))
    url = f"/v0/webhooks/{hook['id']}"
    r = wh.client.delete(url, headers=wh.admin)
    assert r.status_code == 204 and r.content == b""
    assert wh.client.get(url, headers=wh.read).status_code == 404
    assert wh.client.delete(url, headers=wh.admin).status_code == 404
    with wh.rt.db.session() as s:
        assert s.query(WebhookDeliveryRow).count() == 0


def test_read_key_cannot_write_and_no_key_is_401(wh: Api) -> None:
    hook = create(wh)
    base = f"/v0/webhooks/{hook['id']}"
    delivery = add_delivery(wh, hook["id"], "failed", datetime.now(UTC))
    writes = [
        ("post", "/v0/webhooks", {"url": PUBLIC, "events": ["*"]}),
        ("patch", base, {"description": "x"}),
        ("delete", base, None),
        ("post", f"{base}/rotate-secret", None),
        ("post", f"{base}/test", None),
        ("post", f"{base}/deliveries/{delivery}/redeliver", None),
    ]
    for method, path, body in writes:
        kwargs = {"json": body} if body is not None else {}
        r = wh.client.request(method, path, headers=wh.read, **kwargs)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["name"] == "PermissionDeniedError"
    for path in ("/v0/webhooks", base, f"{base}/deliveries"):
        assert wh.client.get(path).status_code == 401
        assert wh.client.get(path, headers=wh.read).status_code == 200


def test_unknown_endpoint_is_404_everywhere(wh: Api) -> None:
    base = "/v0/webhooks/00000000-0000-0000-0000-000000000000"
    for method, path in (
        ("get", base),
        ("post", f"{base}/rotate-secret"),
        ("post", f"{base}/test"),
        ("get", f"{base}/deliveries"),
        ("post", f"{base}/deliveries/x/redeliver"),
    ):
        headers = wh.admin if method == "post" else wh.read
        r = wh.client.request(method, path, headers=headers)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["name"] == "ModelNotFoundError"


# ---- security at registration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.1.20:8443/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "IPv4-mapped"),
        ("https://[::ffff:8.8.8.8]/hook", "IPv4-mapped"),
        ("https://100.64.0.1/hook", "CGNAT"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://240.0.0.1/hook", "reserved"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fd00::1]/hook", "private"),
        ("https://[2002:a9fe:a9fe::1]/hook", "6to4"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://localhost.localdomain./hook", None),
    ],
)
def test_non_public_addresses_are_refused(wh: Api, url: str, word: str | None) -> None:
    message = refused(wh, url)
    if word is not None:
        assert word in message, message
        assert "public" in message


def test_https_only_credentials_and_form(wh: Api) -> None:
    assert "https" in refused(wh, "http://93.184.215.14/hook")
    assert "credentials" in refused(wh, "https://user:pw@93.184.215.14/hook")
    assert "https" in refused(wh, "ftp://93.184.215.14/hook")
    refused(wh, "https:///no-host")
    refused(wh, "https://93.184.215.14/a b")
    refused(wh, "https://93.184.215.14/hook#frag")
    refused(wh, "not a url")
    refused(wh, "https://[::1/hook")
    refused(wh, "https://93.184.215.14:99999/hook")
    refused(wh, "https://" + "a" * 64 + ".example/hook")


def test_names_are_resolved_and_every_address_judged(
    wh: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    answers = {
        "hooks.example.com": ["93.184.215.14", "10.1.2.3"],
        "ok.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    }
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host == "flaky.example.com":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    message = refused(wh, "https://hooks.example.com/in")
    assert "hooks.example.com resolves to 10.1.2.3, a private address" in message
    assert create(wh, url="https://ok.example.com/in")["url"] == "https://ok.example.com/in"
    # DNS trouble now is no verdict: accepted, and checked again at every delivery.
    assert create(wh, url="https://flaky.example.com/in")["status"] == "active"
    assert "does not resolve" in refused(wh, "https://no-such-host.invalid/in")


def test_allow_listed_hosts_may_be_http_and_private(wh: Api) -> None:
    hook = create(wh, url="http://localhost:9999/hook")
    assert hook["url"] == "http://localhost:9999/hook"
    create(wh, url="http://hooks.internal/x")  # need not even resolve
    # ... but only the hosts listed: the same address by another name is refused.
    assert "https" in refused(wh, "http://127.0.0.1:9999/hook")
    assert "loopback" in refused(wh, "https://127.0.0.1:9999/hook")


def test_without_allow_list_localhost_is_refused(api: Api) -> None:
    r = api.client.post(
        "/v0/webhooks",
        json={"url": "http://localhost:9999/hook", "events": ["*"]},
        headers=api.admin,
    )
    assert r.status_code == 400
    r = api.client.post(
        "/v0/webhooks",
        json={"url": "https://localhost:9999/hook", "events": ["*"]},
        headers=api.admin,
    )
    assert r.status_code == 400 and "loopback" in r.json()["message"]


# ---- rotation -----------------------------------------------------------------------------


def test_rotation_keeps_the_previous_secret_for_the_grace_period(wh: Api) -> None:
    hook = create(wh)
    old = hook["secret"]
    before = datetime.now(UTC)
    r = wh.client.post(f"/v0/webhooks/{hook['id']}/rotate-secret", headers=wh.admin)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert r.json()["secretHint"] == new[-4:]
    expires = datetime.fromisoformat(r.json()["previousSecretExpiresAt"])
    grace = timedelta(seconds=get_settings().webhook_rotation_grace_s)
    assert grace == timedelta(hours=24)
    assert before + grace <= expires <= datetime.now(UTC) + grace
    with wh.rt.db.session() as s:
        row = s.get(WebhookEndpointRow, hook["id"])
        assert (row.secret, row.previous_secret) == (new, old)
        assert row.previous_secret_expires_at == expires
        assert active_secrets(row) == [new, old]
        assert active_secrets(row, expires + timedelta(seconds=1)) == [new]
    got = wh.client.get(f"/v0/webhooks/{hook['id']}", headers=wh.read)
    assert new not in got.text and old not in got.text
    # A second rotation: the first secret is gone, the second becomes the previous one.
    third = wh.client.post(f"/v0/webhooks/{hook['id']}/rotate-secret", headers=wh.admin)
    with wh.rt.db.session() as s:
        row = s.get(WebhookEndpointRow, hook["id"])
        assert (row.secret, row.previous_secret) == (third.json()["secret"], new)


# ---- delivery log -------------------------------------------------------------------------


def test_deliveries_list_filters_and_pages(wh: Api) -> None:
    hook = create(wh)
    other = create(wh)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = ["delivered", "failed", "retrying", "delivered", "pending", "delivered"]
    ids = [
        add_delivery(
            wh,
            hook["id"],
            status,
            t0 + timedelta(minutes=i),
            http_status=200 if status == "delivered" else 500,
            response_excerpt="x" * 3000,
            duration_ms=12,
            next_attempt_at=t0 + timedelta(hours=1),
            delivered_at=t0 if status == "delivered" else None,
            error=None if status == "delivered" else "HTTP 500",
        )
        for i, status in enumerate(statuses)
    ]
    add_delivery(wh, other["id"], "delivered", t0)
    base = f"/v0/webhooks/{hook['id']}/deliveries"

    everything = wh.client.get(base, headers=wh.read).json()
    assert [d["id"] for d in everything["data"]] == ids[::-1]
    assert everything["nextCursor"] is None
    first = everything["data"][-1]
    assert set(first) == DELIVERY_FIELDS
    assert first["httpStatus"] == 200 and first["durationMs"] == 12
    assert len(first["responseExcerpt"]) == 1024
    assert first["nextRetryAt"] is None and first["deliveredAt"] is not None
    retrying = wh.client.get(base, params={"status": "retrying"}, headers=wh.read).json()
    assert [d["id"] for d in retrying["data"]] == [ids[2]]
    assert retrying["data"][0]["nextRetryAt"] is not None
    assert retrying["data"][0]["error"] == "HTTP 500"

    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "delivered", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = wh.client.get(base, params=params, headers=wh.read).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [ids[5], ids[3], ids[0]]

    assert wh.client.get(base, params={"status": "lost"}, headers=wh.read).status_code == 400
    assert wh.client.get(base, params={"limit": 201}, headers=wh.read).status_code == 400
    other_cursor = wh.client.get(f"/v0/webhooks/{other['id']}/deliveries", headers=wh.read).json()[
        "data"
    ][0]["id"]
    r = wh.client.get(base, params={"cursor": other_cursor}, headers=wh.read)
    assert r.status_code == 400


def test_redeliver_makes_the_delivery_due_again(wh: Api) -> None:
    hook = create(wh)
    other = create(wh)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    delivery = add_delivery(wh, hook["id"], "failed", t0, attempt_count=8, error="HTTP 500")
    before = datetime.now(UTC)
    r = wh.client.post(
        f"/v0/webhooks/{hook['id']}/deliveries/{delivery}/redeliver", headers=wh.admin
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == delivery and body["status"] == "pending"
    assert body["attemptCount"] == 0
    assert datetime.fromisoformat(body["nextRetryAt"]) >= before
    with wh.rt.db.session() as s:
        row = s.get(WebhookDeliveryRow, delivery)
        assert row.status == "pending" and row.next_attempt_at >= before
    # Not through another endpoint's id; not an unknown delivery.
    r = wh.client.post(
        f"/v0/webhooks/{other['id']}/deliveries/{delivery}/redeliver", headers=wh.admin
    )
    assert r.status_code == 404
    r = wh.client.post(f"/v0/webhooks/{hook['id']}/deliveries/nope/redeliver", headers=wh.admin)
    assert r.status_code == 404
    # A disabled endpoint is enabled first.
    wh.client.patch(f"/v0/webhooks/{hook['id']}", json={"status": "disabled"}, headers=wh.admin)
    r = wh.client.post(
        f"/v0/webhooks/{hook['id']}/deliveries/{delivery}/redeliver", headers=wh.admin
    )
    assert r.status_code == 409


def test_test_ping_creates_a_due_ping_delivery(wh: Api) -> None:
    hook = create(wh, events=["asset.ready"])
    r = wh.client.post(f"/v0/webhooks/{hook['id']}/test", headers=wh.admin)
    assert r.status_code == 202, r.text
    ping = r.json()
    assert set(ping) == DELIVERY_FIELDS
    assert ping["eventType"] == "ping" and ping["status"] == "pending"
    assert ping["attemptCount"] == 0 and ping["nextRetryAt"] is not None
    second = wh.client.post(f"/v0/webhooks/{hook['id']}/test", headers=wh.admin).json()
    assert second["id"] != ping["id"] and second["eventId"] != ping["eventId"]
    log = wh.client.get(
        f"/v0/webhooks/{hook['id']}/deliveries", params={"status": "pending"}, headers=wh.read
    ).json()
    assert {d["id"] for d in log["data"]} == {ping["id"], second["id"]}
    wh.client.patch(f"/v0/webhooks/{hook['id']}", json={"status": "disabled"}, headers=wh.admin)
    r = wh.client.post(f"/v0/webhooks/{hook['id']}/test", headers=wh.admin)
    assert r.status_code == 409 and r.json()["name"] == "ConflictError"


def test_openapi_lists_the_webhook_routes(wh: Api) -> None:
    r = wh.client.get("/openapi.json", headers=wh.read)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {
        "/v0/webhooks",
        "/v0/webhooks/{webhook_id}",
        "/v0/webhooks/{webhook_id}/rotate-secret",
        "/v0/webhooks/{webhook_id}/deliveries",
        "/v0/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        "/v0/webhooks/{webhook_id}/test",
    } <= set(paths)
