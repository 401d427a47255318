"""The API's conventions on the embedded default: auth and scopes, request ids, API
versions, error bodies, health, readiness, metrics, OpenAPI, idempotency keys and
`mediamill keys` / `mediamill serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from fastapi import Depends, Request
from fastapi.routing import APIRoute

from mediamill.api.auth import Principal, require_admin
from mediamill.api.idempotency import idempotent
from mediamill.storage.api_keys import create_api_key, revoke_api_key

pytestmark = pytest.mark.integration


def test_every_route_but_health_and_ready_needs_a_key(api) -> None:
    open_paths = {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    for route in api.client.app.routes:
        if not isinstance(route, APIRoute) or route.path in open_paths:
            continue
        path = route.path.replace("{", "").replace("}", "")
        method = sorted(route.methods)[0]
        r = api.client.request(method, path)
        assert r.status_code == 401, (method, route.path, r.status_code)
        body = r.json()
        assert body["name"] == "AuthenticationError" and body["statusCode"] == 401
    assert api.client.get("/health").json() == {"status": "ok"}


def test_both_key_forms_work_and_bad_keys_are_401(api) -> None:
    assert api.client.get("/v0/version", headers=api.admin).status_code == 200
    assert api.client.get("/v0/version", headers=api.read).json()["name"] == "mediamill"
    wrong = {**api.admin, "x-authentication-token": "x" + api.admin["x-authentication-token"]}
    assert api.client.get("/v0/version", headers=wrong).status_code == 401
    assert api.client.get("/v0/version", headers={"X-API-Key": "nodot"}).status_code == 401
    with api.rt.db.session() as s:
        key = create_api_key(s, "read")
    headers = {"X-API-Key": key.api_key}
    assert api.client.get("/v0/version", headers=headers).status_code == 200
    with api.rt.db.session() as s:
        assert revoke_api_key(s, key.client_id)
    from mediamill.api import auth

    auth._cache = auth._KeyCache()  # revocation is seen once the short cache lapses
    assert api.client.get("/v0/version", headers=headers).status_code == 401


def test_request_id_and_api_version_are_echoed(api) -> None:
    r = api.client.get("/v0/version", headers={**api.read, "X-Request-Id": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["x-api-version"] == "2026-11-22"
    r = api.client.get("/v0/version", headers={**api.read, "X-API-Version": "2026-11-22"})
    assert r.status_code == 200 and r.headers["x-api-version"] == "2026-11-22"
    r = api.client.get("/v0/version", headers={**api.read, "X-API-Version": "2001-01-01"})
    assert r.status_code == 400
    assert r.json()["name"] == "InvalidRequestError" and r.json()["requestId"]
    assert r.json()["requestId"] == r.headers["x-request-id"]
    r = api.client.get("/nowhere", headers={**api.read, "X-Request-Id": "req-404"})
    assert r.status_code == 404
    assert r.json() == {
        "name": "ModelNotFoundError",
        "message": "Not Found",
        "statusCode": 404,
        "requestId": "req-404",
    }


def test_ready_reports_each_dependency_and_503_names_the_failure(api, monkeypatch) -> None:
    r = api.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}

    def broken(key: str) -> bool:
        raise OSError("disk gone")

    monkeypatch.setattr(api.rt.store, "exists", broken)
    r = api.client.get("/ready")
    assert r.status_code == 503
    assert r.json()["name"] == "ServiceUnavailableError"
    assert r.json()["message"] == "not ready: store"
    assert "disk gone" in r.json()["checks"]["store"]


def test_metrics_expose_jobs_queue_depth_stage_durations_and_latency(api, samples) -> None:
    from mediamill.workers.submit import submit_local_file

    job = submit_local_file(api.rt, samples["speech.wav"], stage_in_store=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with api.rt.db.session() as s:
            from mediamill.storage import repo

            if repo.load_job(s, job.id).status.terminal:
                break
        time.sleep(0.1)
    api.client.get("/v0/version", headers=api.read)
    text = api.client.get("/metrics", headers=api.read).text
    assert 'mediamill_jobs{status="succeeded",type="ingest"} 1.0' in text
    assert 'mediamill_queue_depth{queue="mediamill"} 0.0' in text
    for stage in ("store", "analyse", "transcode", "package"):
        assert f'mediamill_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text, stage
    assert (
        'mediamill_http_request_duration_seconds_count{method="GET",route="/v0/version",'
        'status="200"} 1.0' in text
    )


def test_openapi_and_docs_are_served(api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "MediaMill" and "/v0/version" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_idempotency_key_replays_the_first_answer(api) -> None:
    made = []

    def create(request: Request, body: dict, principal: Principal = Depends(require_admin)):  # noqa: B008
        return idempotent(
            request,
            principal,
            "test-create",
            body,
            lambda: (201, {"n": len(made.append(1) or made)}),
        )

    api.client.app.post("/test-create")(create)
    headers = {**api.admin, "Idempotency-Key": "k1"}
    first = api.client.post("/test-create", json={"a": 1}, headers=headers)
    again = api.client.post("/test-create", json={"a": 1}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"n": 1} and len(made) == 1
    assert again.headers["idempotent-replayed"] == "true"
    other = api.client.post("/test-create", json={"a": 2}, headers=headers)
    assert other.status_code == 409 and other.json()["name"] == "ConflictError"
    assert api.client.post("/test-create", json={"a": 1}, headers=api.admin).json() == {"n": 2}
    read_only = api.client.post("/test-create", json={"a": 1}, headers=api.read)
    assert read_only.status_code == 403 and read_only.json()["name"] == "PermissionDeniedError"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_create_and_serve_on_the_embedded_default(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    cli = [sys.executable, "-m", "mediamill"]
    made = subprocess.run(
        [*cli, "keys", "create", "--scope", "read", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)
    assert set(key) == {"clientId", "token", "apiKey", "scope"} and key["scope"] == "read"
    port = _free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready") as r:
                    assert json.load(r)["status"] == "ready"
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v0/version",
            headers={"x-client-id": key["clientId"], "x-authentication-token": key["token"]},
        )
        with urllib.request.urlopen(req) as r:
            assert json.load(r)["name"] == "mediamill"
    finally:
        server.terminate()
        server.wait(timeout=30)
