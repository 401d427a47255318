"""The API's conventions on the embedded default: auth and scopes, request ids, API
versions, error bodies, health, readiness, metrics, OpenAPI, idempotency keys and
`mediamill keys` / `mediamill serve`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import Depends, Request
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from support import free_port, raw_job

from mediamill.api.auth import Principal, require_admin
from mediamill.api.idempotency import idempotent
from mediamill.storage import idempotency
from mediamill.storage.api_keys import create_api_key, revoke_api_key
from mediamill.storage.models import IdempotencyKeyRow, JobRow, LegacyAssetRow, UploadRow

pytestmark = pytest.mark.integration


def test_every_route_but_health_and_ready_needs_a_key(api) -> None:
    # FastAPI keeps included routers whole in app.routes: walk their effective routes.
    routes = list(iter_route_contexts(api.client.app.routes))
    paths = {route.path for route in routes}
    assert {"/v0/assets", "/v0/jobs", "/openapi.json", "/docs", "/redoc"} <= paths
    # The beacon script: a <script> tag sends no key.
    open_paths = {"/health", "/ready", "/openapi.json", "/docs", "/redoc", "/v0/player/beacon.js"}
    for route in routes:
        if route.path == "/cdn":  # the embedded edge: signed URLs, tokens not keys
            assert not isinstance(route.original_route, APIRoute)
            assert api.client.get("/cdn/renditions/x/y.mp3").status_code == 403
            continue
        assert isinstance(route.original_route, APIRoute), route.path
        if route.path in open_paths:
            continue
        path = route.path.replace("{", "").replace("}", "")
        method = sorted(route.methods)[0]
        r = api.client.request(method, path)
        assert r.status_code == 401, (method, route.path, r.status_code)
        if method == "HEAD":
            continue
        body = r.json()
        if route.path.startswith("/analytics/v1/"):  # IBM's error shape
            assert body["errors"][0]["title"] == "AuthenticationError", route.path
            assert body["errors"][0]["status"] == 401
        else:
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


def test_ready_reports_each_dependency_and_503_names_the_failure(api, monkeypatch, caplog) -> None:
    r = api.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok", "workers": "ok"}

    def broken(key: str) -> bool:
        raise OSError("disk gone at s3://user:secret@internal-host")

    monkeypatch.setattr(api.rt.store, "exists", broken)
    with caplog.at_level("WARNING", logger="mediamill.api.routes.ops"):
        r = api.client.get("/ready")
    assert r.status_code == 503
    assert r.json()["name"] == "ServiceUnavailableError"
    assert r.json()["message"] == "not ready: store"
    assert r.json()["checks"] == {
        "database": "ok", "broker": "ok", "store": "failed", "workers": "ok"
    }  # fmt: skip
    # /ready takes no key: why it failed (hosts, users) is logged, never answered.
    assert "internal-host" not in r.text and "disk gone" not in r.text
    assert "readiness check store failed" in caplog.text and "internal-host" in caplog.text


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


def test_openapi_and_docs_are_public_and_declare_the_key(api) -> None:
    spec = api.client.get("/openapi.json").json()  # no key
    assert spec["info"]["title"] == "MediaMill" and "/v0/version" in spec["paths"]
    assert not {"/openapi.json", "/docs", "/redoc"} & set(spec["paths"])
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`<clientId>.<token>` of a key from `mediamill keys create`",
    }
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            wanted = None if path in ("/health", "/ready") else [{"ApiKey": []}]
            assert operation.get("security") == wanted, path
    for path in ("/docs", "/redoc"):
        page = api.client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in page.text
    # The key the schema declares is the one the routes take.
    r = api.client.get("/v0/version", headers=api.read)  # the X-API-Key form
    assert r.status_code == 200, r.text


def test_docs_closed_with_public_docs_off(embedded_env) -> None:
    from api_support import running_api

    from mediamill.config.settings import Settings

    settings = Settings(_env_file=None, data_dir=embedded_env, public_docs=False)
    with running_api(settings, run_worker=False) as closed:
        for path in ("/openapi.json", "/docs", "/redoc"):
            r = closed.client.get(path)
            assert r.status_code == 401 and r.json()["name"] == "AuthenticationError", path
            assert closed.client.get(path, headers=closed.read).status_code == 200, path


def test_ready_fails_workers_when_jobs_wait_and_no_worker_lives(embedded_env) -> None:
    """An API without its worker (as a broker-less deployment was before): queued work
    nothing consumes is a 503 naming `workers`; a worker's heartbeat clears it, and
    /metrics counts live workers."""
    from datetime import timedelta

    from api_support import running_api

    from mediamill.config.settings import Settings
    from mediamill.schemas.base import utcnow
    from mediamill.schemas.jobs import JobStage, JobType
    from mediamill.storage import workers as worker_rows
    from mediamill.storage.models import WorkerRow

    settings = Settings(_env_file=None, data_dir=embedded_env, worker_stale_s=30)
    with running_api(settings, run_worker=False) as api:
        assert api.client.get("/ready").status_code == 200  # nothing queued: nothing owed
        with api.rt.db.session() as s:
            raw_job(s, JobType.INGEST, JobStage.STORE, {})
        r = api.client.get("/ready")
        assert r.status_code == 503 and r.json()["checks"]["workers"] == "failed", r.text
        assert r.json()["message"] == "not ready: workers"
        with api.rt.db.session() as s:
            worker_rows.beat(s, "host:1:abc", "host", 1, 2)
        assert api.client.get("/ready").status_code == 200
        metrics = api.client.get("/metrics", headers=api.read).text
        assert "mediamill_workers_live 1.0" in metrics
        with api.rt.db.session() as s:  # its heartbeat stopped a stale period ago
            row = s.get(WorkerRow, "host:1:abc")
            row.seen_at = utcnow() - timedelta(seconds=31)
        assert api.client.get("/ready").status_code == 503
        assert "mediamill_workers_live 0.0" in api.client.get("/metrics", headers=api.read).text


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


def test_an_unanswered_claim_is_taken_over_and_its_holder_cannot_answer(api) -> None:
    """A claim with no answer blocks its key ("in progress") until the claim timeout;
    then a retry takes it over, and the first holder can neither answer nor release it
    any more (its resource would roll back with its answer)."""
    made = []

    def create(request: Request, body: dict, principal: Principal = Depends(require_admin)):  # noqa: B008
        return idempotent(
            request,
            principal,
            "test-claims",
            body,
            lambda: (201, {"n": len(made.append(1) or made)}),
        )

    api.client.app.post("/test-claims")(create)
    client_id = api.admin["x-client-id"]
    digest = hashlib.sha256(json.dumps({"a": 1}, sort_keys=True).encode()).hexdigest()
    old = datetime.now(UTC) - timedelta(seconds=api.rt.settings.idempotency_claim_timeout_s + 1)
    for key, claimed_at in (("recent", datetime.now(UTC)), ("stale", old)):
        with api.rt.db.session() as s:
            s.add(
                IdempotencyKeyRow(
                    id=str(uuid.uuid4()),
                    client_id=client_id,
                    route="test-claims",
                    key=key,
                    request_sha256=digest,
                    created_at=claimed_at,
                )
            )

    def post(key: str, body: dict):
        return api.client.post(
            "/test-claims", json=body, headers={**api.admin, "Idempotency-Key": key}
        )

    recent = post("recent", {"a": 1})
    assert recent.status_code == 409 and "still in progress" in recent.json()["message"]
    other = post("stale", {"a": 2})
    assert other.status_code == 409 and "different request" in other.json()["message"]
    taken = post("stale", {"a": 1})
    assert taken.status_code == 201 and taken.json() == {"n": 1}, taken.text
    replay = post("stale", {"a": 1})
    assert replay.json() == {"n": 1} and replay.headers["idempotent-replayed"] == "true"
    assert len(made) == 1
    with api.rt.db.session() as s:  # the dead holder, were it to wake up
        assert not idempotency.record_answer(s, client_id, "test-claims", "stale", old, 201, {})
        idempotency.release_key(s, client_id, "test-claims", "stale", old)
    assert post("stale", {"a": 1}).json() == {"n": 1}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v0/uploads",
            '{"filename": "a.flac", "contentType": "audio/flac", "sizeBytes": 10, '
            '"assetType": "audio/\\ud800"}',
        ),
        (
            "/v0/uploads",
            '{"filename": "\\ud800.flac", "contentType": "audio/flac", "sizeBytes": 1}',
        ),
        ("/v0/jobs", '{"source": {"key": "media/a.flac"}, "filename": "\\udfff"}'),
        ("/v0/jobs", '{"source": {"key": "media/a.flac", "\\ud800": 1}}'),
        ("/v0/legacy/assets", '{"legacyTrackToken": "\\ud800", "originalFileName": "a"}'),
        ("/v0/legacy/assets", '{"legacyTrackToken": "t1", "legacyAssetId": "\\ud800"}'),
    ],
)
def test_lone_surrogates_in_request_bodies_are_a_400(api, path: str, body: str) -> None:
    """JSON may escape a lone UTF-16 surrogate, which is no text: every request body
    refuses it (one shared validator) before anything reaches the database."""
    api.rt.store.put("media/a.flac", io.BytesIO(b"0123456789"))
    headers = {**api.admin, "Content-Type": "application/json"}
    r = api.client.post(path, content=body.encode(), headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["name"] == "InvalidRequestError" and "surrogate" in r.json()["message"]
    with api.rt.db.session() as s:
        for table in (UploadRow, JobRow, LegacyAssetRow):
            assert s.scalars(select(table)).all() == []


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
    port = free_port()
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


# ---- request body limits ----------------------------------------------------------------------

JSON_LIMIT_BYTES = 1024
UPLOAD_LIMIT_BYTES = 128 * 1024


@pytest.fixture
def small_limits_api(embedded_env):
    """The API with small body limits (JSON 1 KiB, uploads 128 KiB), no worker."""
    from api_support import running_api

    from mediamill.config.settings import Settings

    settings = Settings(
        _env_file=None,
        data_dir=embedded_env,
        max_json_body_bytes=JSON_LIMIT_BYTES,
        upload_max_bytes=UPLOAD_LIMIT_BYTES,
        bucket_events_token="bucket-token-0123456789",
    )
    with running_api(settings, run_worker=False) as running:
        yield running


def _assert_413(r) -> None:
    assert r.status_code == 413, (r.status_code, r.text)
    body = r.json()
    assert body["name"] == "PayloadTooLargeError" and body["statusCode"] == 413, body
    assert body["requestId"] == r.headers["x-request-id"]


def _job_count(api) -> int:
    from mediamill.storage.models import JobRow

    with api.rt.db.session() as s:
        return s.query(JobRow).count()


@pytest.mark.security
def test_an_oversized_json_body_is_413_before_any_handler(small_limits_api, monkeypatch) -> None:
    api = small_limits_api
    from mediamill.api.routes import events

    handled: list[object] = []  # bodies that reached the handler
    monkeypatch.setattr(events, "parse_notification", lambda body, limit: handled.append(body))
    monkeypatch.setattr(events, "handle_notification", lambda rt, parsed: [])
    big = {"source": {"key": "media/a.wav"}, "filename": "x" * 2 * JSON_LIMIT_BYTES}
    r = api.client.post("/v0/jobs", json=big, headers=api.admin)  # with Content-Length
    _assert_413(r)
    assert "MEDIAMILL_MAX_JSON_BODY_BYTES" in r.json()["message"]

    def chunked(n: int):  # no Content-Length: counted as it streams
        yield b'{"Records": ['
        for i in range(n):
            yield b'{"eventName": "s3:TestEvent"},' * 20 if i < n - 1 else b"{}"
        yield b"]}"

    json_type = {"Content-Type": "application/json"}
    bearer = {**json_type, "Authorization": "Bearer bucket-token-0123456789"}
    for headers in (json_type, bearer):  # the body is refused before the token is even checked
        r = api.client.post("/v0/events/storage", content=chunked(50), headers=headers)
        _assert_413(r)
    assert handled == [] and _job_count(api) == 0
    # Under the limit, both routes work as before.
    ok = api.client.post("/v0/events/storage", content=chunked(1), headers=bearer)
    assert ok.status_code == 200 and handled == [{"Records": [{}]}]
    assert api.client.post("/v0/jobs", json={"source": {}}, headers=api.admin).status_code == 400


@pytest.mark.security
def test_an_oversized_upload_is_413_and_nothing_is_stored(small_limits_api, samples) -> None:
    from mediamill.storage.models import AssetRow

    api = small_limits_api
    boundary = "mediamill-test-boundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="assetfile"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = os.urandom(16 * 1024)
    pieces = 2 * UPLOAD_LIMIT_BYTES // len(piece) + 8  # past the limit and its framing allowance

    def body():
        yield head
        for _ in range(pieces):
            yield piece
        yield tail

    headers = {**api.admin, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = api.client.post("/v0/assets", content=body(), headers=headers)  # chunked
    _assert_413(r)
    assert "MEDIAMILL_UPLOAD_MAX_BYTES" in r.json()["message"]
    whole = b"".join(body())
    _assert_413(api.client.post("/v0/assets", content=whole, headers=headers))  # declared
    assert list(api.rt.store.list("originals/")) == []
    with api.rt.db.session() as s:
        assert s.query(AssetRow).count() == 0
    assert _job_count(api) == 0
    # An upload within the limit (a JSON-sized limit does not apply to it) is stored.
    path = samples["short.wav"]
    assert JSON_LIMIT_BYTES < path.stat().st_size < UPLOAD_LIMIT_BYTES
    with path.open("rb") as f:
        ok = api.client.post("/v0/assets", files={"assetfile": (path.name, f)}, headers=api.admin)
    assert ok.status_code == 201, ok.text
    assert list(api.rt.store.list("originals/")) == [f"originals/{ok.json()['originalAssetId']}"]


def test_nul_in_urls_and_bodies_is_a_400_not_a_database_crash(api) -> None:
    for path in ("/v0/jobs/a%00b", "/v0/jobs?assetId=a%00b", "/v0/legacy/tracks/t%00k"):
        r = api.client.get(path, headers=api.read)
        assert r.status_code == 400 and r.json()["name"] == "InvalidRequestError", path
        assert "NUL" in r.json()["message"]
    body = '{"filename": "a\\u0000b", "sizeBytes": 10, "contentType": "audio/flac"}'
    r = api.client.post(
        "/v0/uploads", content=body, headers={**api.admin, "content-type": "application/json"}
    )
    assert r.status_code == 400 and "NUL" in r.json()["message"], r.text
