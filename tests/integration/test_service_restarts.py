"""Service restarts for real: Redis restarted mid-run, PostgreSQL connections dropped and
refused for a while. A `mediamill worker` process and a `mediamill serve` API run on a
private Redis (append-only, fsync always, so a restart keeps queued messages), a fresh
PostgreSQL database and the moto S3 endpoint. While a service is down, `/ready` answers
503 naming it and `/health` stays 200; afterwards the same processes carry on and every
job submitted before, during and after the outage succeeds.

What the API answers during an outage (see docs/operations.md, Run the distributed stack):
- Redis down: `POST /v0/jobs` still answers 201. The job row is committed before its
  message is sent; the failed send marks the row unsent and the sweeper sends it once
  Redis is back.
- PostgreSQL down: nothing can be recorded, so routes answer a clean 503
  `ServiceUnavailableError` with `Retry-After` (never a 500 or a stack trace); the client
  submits again (with its Idempotency-Key) once `/ready` is 200.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import (
    IN_CI,
    POSTGRES_ADMIN_URL,
    REDIS_SERVER,
    PrivateRedis,
    make_sample,
    require_service,
)

from mediamill.workers.queue import QUEUE_NAME

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
START_TIMEOUT_S = 60.0
STATE_TIMEOUT_S = 60.0  # bounded waits for a state (/ready flipping, processes starting)
JOBS_TIMEOUT_S = 90.0  # every job of a test reaching a terminal state
POLL_S = 0.25
RENDITION = {"format": "mp3", "bitrate": 64000, "channels": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """The processes under test and how to reach them."""

    env: dict[str, str]
    redis: PrivateRedis
    api_url: str
    admin: dict[str, str]
    worker: subprocess.Popen
    api: subprocess.Popen
    logs: Path
    base_wav: bytes
    store: object
    staged: int = 0

    def log_tail(self, chars: int = 6000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted(self.logs.glob("*.log"))
        )

    def assert_alive(self) -> None:
        for name, proc in (("worker", self.worker), ("API", self.api)):
            assert proc.poll() is None, f"the {name} process exited:\n{self.log_tail()}"


def wait_for(predicate, what: str, timeout_s: float = STATE_TIMEOUT_S):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


def http(stack: Stack, method: str, path: str, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=stack.api_url, timeout=30.0, trust_env=False) as client:
        return client.request(method, path, **kwargs)


def ready(stack: Stack) -> httpx.Response:
    return http(stack, "GET", "/ready")


def new_job_body(stack: Stack) -> dict:
    """A POST /v0/jobs body for a distinct original staged in the bucket: one small
    rendition, no package, so three stage messages per job."""
    stack.staged += 1
    # Distinct bytes per job (the last sample changes), so no job is deduplicated.
    data = stack.base_wav[:-2] + stack.staged.to_bytes(2, "little")
    key = f"in/{uuid.uuid4().hex}.wav"
    stack.store.put(key, io.BytesIO(data))
    return {"source": {"key": key}, "renditions": [RENDITION], "package": False}


def submit(
    stack: Stack,
    body: dict | None = None,
    *,
    expect: int = 201,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """POST /v0/jobs (a new original unless `body` is given), asserting the status."""
    headers = dict(stack.admin)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    response = http(stack, "POST", "/v0/jobs", json=body or new_job_body(stack), headers=headers)
    assert response.status_code == expect, f"{response.status_code} {response.text}"
    return response


def job(stack: Stack, job_id: str) -> dict:
    response = http(stack, "GET", f"/v0/jobs/{job_id}", headers=stack.admin)
    assert response.status_code == 200, response.text
    return response.json()


def wait_all_succeeded(stack: Stack, job_ids: list[str]) -> None:
    """Every job reaches a terminal state within the bound, and that state is success."""
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    pending = set(job_ids)
    finished: dict[str, dict] = {}
    while pending and time.monotonic() < deadline:
        stack.assert_alive()
        for job_id in sorted(pending):
            found = job(stack, job_id)
            if found["status"] in {"succeeded", "failed", "cancelled"}:
                finished[job_id] = found
                pending.discard(job_id)
        time.sleep(POLL_S)
    unfinished = [_summary(job(stack, j)) for j in sorted(pending)]
    assert not unfinished, f"jobs never finished: {unfinished}\n{stack.log_tail()}"
    failed = [_summary(f) for f in finished.values() if f["status"] != "succeeded"]
    assert not failed, f"jobs did not succeed: {failed}\n{stack.log_tail()}"


def _summary(found: dict) -> str:
    return f"{found['id']} {found['status']}/{found['stage']} x{found['attempts']} {found['error']}"


def any_running(stack: Stack, job_ids: list[str]) -> bool:
    """Mid-run: some job is being worked on (a stage claimed or past the first)."""
    return any(
        (j := job(stack, job_id))["status"] == "running" or j["stage"] != "store"
        for job_id in job_ids
    )


def dead_lettered(stack: Stack) -> int:
    """Messages in dramatiq's dead-letter set of our queue (retries ran out)."""
    import redis

    client = redis.Redis.from_url(stack.redis.url)
    try:
        return int(client.zcard(f"dramatiq:{QUEUE_NAME}.XQ"))
    finally:
        client.close()


def assert_not_ready(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["name"] == "ServiceUnavailableError" and dependency in body["message"], body
    assert body["checks"][dependency] == "failed", body


def assert_ready(stack: Stack) -> None:
    response = ready(stack)
    assert response.status_code == 200, response.text
    assert set(response.json()["checks"].values()) == {"ok"}, response.text


# ---- the stack ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(moto_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private Redis, a fresh PostgreSQL database, a bucket on moto, a worker process and
    an API process. Sweeps every second, but `requeue_after_s` keeps its default (300 s):
    no job here may pass by waiting for it, only by what an outage leaves behind being
    sent again at once. Short leases and retry backoffs keep the test short."""
    if not Path(REDIS_SERVER).exists():
        message = f"{REDIS_SERVER} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    require_service(POSTGRES_ADMIN_URL, "PostgreSQL")
    from integration.conftest import distributed_env, settings_from_env

    from mediamill.storage.blobs import open_store

    root = tmp_path_factory.mktemp("restarts")
    logs = root / "logs"
    (root / "redis").mkdir()
    logs.mkdir()
    redis_server = PrivateRedis(_free_port(), root / "redis")
    redis_server.start()
    base = make_sample(root / "base.wav", kind="sine", duration_s=1.0, rate=22050, channels=1)
    api_port = _free_port()
    try:
        with distributed_env(
            moto_server,
            redis_server.url,
            root / "data",
            "mm-restarts",
            MEDIAMILL_SWEEP_INTERVAL_S="1",
            MEDIAMILL_JOB_LEASE_S="8",
            MEDIAMILL_RETRY_MIN_BACKOFF_MS="200",
            MEDIAMILL_RETRY_MAX_BACKOFF_MS="2000",
            MEDIAMILL_WORKER_THREADS="2",
        ) as env:
            env["PYTHONUNBUFFERED"] = "1"
            subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, timeout=120)
            created = subprocess.run(
                [*CLI, "keys", "create", "--scope", "admin", "--json"],
                env=env, check=True, timeout=120, capture_output=True, text=True,
            )  # fmt: skip
            key = json.loads(created.stdout)
            worker_log = (logs / "worker.log").open("wb")
            api_log = (logs / "api.log").open("wb")
            worker = subprocess.Popen(
                [*CLI, "worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT
            )
            api = subprocess.Popen(
                [*CLI, "serve", "--host", "127.0.0.1", "--port", str(api_port)],
                env=env,
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
            running = Stack(
                env=env,
                redis=redis_server,
                api_url=f"http://127.0.0.1:{api_port}",
                admin={"X-API-Key": key["apiKey"]},
                worker=worker,
                api=api,
                logs=logs,
                base_wav=base.read_bytes(),
                store=open_store(settings_from_env(env)),
            )
            try:

                def api_ready() -> bool:
                    running.assert_alive()
                    try:
                        return ready(running).status_code == 200
                    except httpx.HTTPError:
                        return False

                wait_for(api_ready, "the API to be ready", START_TIMEOUT_S)
                yield running
            finally:
                for proc in (api, worker):
                    if proc.poll() is None:
                        proc.terminate()
                for proc in (api, worker):
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
                worker_log.close()
                api_log.close()
    finally:
        redis_server.kill()


# ---- PostgreSQL administration (as postgres, on the `postgres` database) ---------------------


def _admin_execute(sql: str, **params: object) -> list:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _database_name(stack: Stack) -> str:
    return stack.env["MEDIAMILL_DATABASE_URL"].rsplit("/", 1)[-1]


def terminate_backends(stack: Stack) -> int:
    """pg_terminate_backend on every connection to the test database: what a PostgreSQL
    restart or failover does to the pools of the worker and the API."""
    rows = _admin_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = :db AND pid <> pg_backend_pid()",
        db=_database_name(stack),
    )
    return len(rows)


def allow_connections(stack: Stack, allowed: bool) -> None:
    name = _database_name(stack)
    _admin_execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')


# ---- the tests ------------------------------------------------------------------------------


def test_redis_restart_mid_run_loses_nothing(stack: Stack) -> None:
    """Kill Redis while jobs run, submit more while it is down, start it again on the same
    port: /ready tells the outage, the same worker and API carry on, every job succeeds."""
    worker_pid, api_pid = stack.worker.pid, stack.api.pid
    before = [submit(stack).json()["id"] for _ in range(3)]
    wait_for(lambda: any_running(stack, before), "a job to be under way")

    stack.redis.kill()
    wait_for(lambda: ready(stack).status_code == 503, "/ready to report the broker outage")
    assert_not_ready(ready(stack), "broker")
    assert http(stack, "GET", "/health").status_code == 200

    # Submitted while the broker is down: recorded (201, queued), sent by the sweeper later.
    during = []
    for _ in range(2):
        answer = submit(stack).json()
        assert answer["status"] == "queued", answer
        during.append(answer["id"])
    stack.assert_alive()

    stack.redis.start()  # same port, same append-only file
    wait_for(lambda: ready(stack).status_code == 200, "/ready to recover after Redis restarted")
    assert_ready(stack)
    after = [submit(stack).json()["id"] for _ in range(2)]

    wait_all_succeeded(stack, before + during + after)
    stack.assert_alive()
    assert (stack.worker.pid, stack.api.pid) == (worker_pid, api_pid)


def test_postgres_connections_dropped_and_refused(stack: Stack) -> None:
    """Drop every connection mid-run, then refuse connections for a while: /ready names
    the database while it lasts, the API answers clean 503s, and afterwards the same
    processes finish every job."""
    worker_pid, api_pid = stack.worker.pid, stack.api.pid
    before = [submit(stack).json()["id"] for _ in range(3)]
    wait_for(lambda: any_running(stack, before), "a job to be under way")

    # 1. Every connection dropped at once (a restart or failover): pools reconnect.
    assert terminate_backends(stack) > 0, "the worker and the API hold no connections?"
    assert_ready(stack)
    dropped = [submit(stack).json()["id"]]

    # 2. An outage that lasts: new connections refused, existing ones dropped. Two jobs
    # are sent just before, so the worker takes their messages during the outage.
    into_outage = [submit(stack).json()["id"] for _ in range(2)]
    dead_before = dead_lettered(stack)
    allow_connections(stack, False)
    try:
        terminate_backends(stack)
        wait_for(lambda: ready(stack).status_code == 503, "/ready to report the database outage")
        assert_not_ready(ready(stack), "database")
        assert http(stack, "GET", "/health").status_code == 200
        # Held until a message's retries (claims the database refused) ran out and it was
        # dead-lettered: from here only the sweeper can bring its job back.
        wait_for(
            lambda: dead_lettered(stack) > dead_before,
            "a message to be dead-lettered during the outage",
        )

        refused_body = new_job_body(stack)
        refused = submit(stack, refused_body, expect=503, idempotency_key="during-db-outage")
        body = refused.json()
        assert body["name"] == "ServiceUnavailableError" and body["statusCode"] == 503, body
        assert "Traceback" not in refused.text and refused.headers.get("Retry-After"), body
        read = http(stack, "GET", f"/v0/jobs/{before[0]}", headers=stack.admin)
        assert read.status_code == 503 and read.json()["name"] == "ServiceUnavailableError"
        stack.assert_alive()
    finally:
        allow_connections(stack, True)

    wait_for(lambda: ready(stack).status_code == 200, "/ready to recover after the outage")
    assert_ready(stack)
    # The client's retry of the refused submission goes through now.
    retried = submit(stack, refused_body, idempotency_key="during-db-outage").json()["id"]
    after = [submit(stack).json()["id"] for _ in range(2)]

    wait_all_succeeded(stack, before + dropped + into_outage + [retried] + after)
    stack.assert_alive()
    assert (stack.worker.pid, stack.api.pid) == (worker_pid, api_pid)
