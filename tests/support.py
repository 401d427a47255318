"""Helpers shared by tests: service checks, throwaway databases, script loading, brokers."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

if TYPE_CHECKING:
    from mediamill.workers.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "MEDIAMILL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("MEDIAMILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("MEDIAMILL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

MakeRuntime = Callable[..., "Runtime"]


def tamper(token: str) -> str:
    """The same token with its first character changed (still valid base64url), so it
    always differs from the original, whatever character that was."""
    return ("B" if token[0] == "A" else "A") + token[1:]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app, port: int | None = None) -> Iterator[str]:
    """`app` on uvicorn in a thread on loopback (lifespan on) until the block ends;
    yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class RefusingBroker(StubBroker):
    """A broker that cannot be reached: every enqueue fails as a dropped Redis would."""

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        raise ConnectionError("broker unreachable")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: a test's server never outlives it."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"mediamill_scripts_{name}", ROOT / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_sample = _load_script("make_sample").make_sample


def require_service(url: str, name: str) -> None:
    """Fail (CI) or skip (elsewhere) unless something listens at `url`'s host:port."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable at {parsed.hostname}:{parsed.port} ({exc})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its URL, drop it afterwards."""
    require_service(POSTGRES_ADMIN_URL, "PostgreSQL")
    from sqlalchemy import create_engine, text

    name = f"mediamill_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from mediamill.storage.db import database_for

        database_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_job(rt, job_id: str, timeout_s: float = 60):
    """The job once it is terminal (read from `rt`'s database), polled every 50 ms;
    AssertionError after `timeout_s`."""
    import time

    from mediamill.storage import repo

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with rt.db.session() as s:
            job = repo.load_job(s, job_id)
        if job.status.terminal:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server answered and/or closed the connection within `within_s`."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:  # reset: aborted
        return True


def slowloris(port: int, head: bytes, byte_delay_s: float, wait_s: float) -> float | None:
    """Send `head` to 127.0.0.1:`port` a byte every `byte_delay_s`, never finishing it;
    the seconds until the server cut the connection, or None if it kept it `wait_s`
    after the last byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - started
            time.sleep(byte_delay_s)
        return time.monotonic() - started if closed_by_peer(sock, wait_s) else None


def raw_job(session, job_type, stage, params: dict, *, asset_id=None, parent_id=None):
    """A queued job row with `params` stored exactly as given, as an earlier version
    (or a hand-written fixture) left it: no model checks them on the way in, so a test
    can write what it needs and the actors' own validation is what meets it."""
    from mediamill.schemas.base import utcnow
    from mediamill.storage.models import JobRow

    now = utcnow()
    row = JobRow(
        id=str(uuid.uuid4()),
        type=job_type.value,
        stage=stage.value,
        status="queued",
        progress=0.0,
        attempts=0,
        params=params,
        asset_id=asset_id,
        parent_id=parent_id,
        created_at=now,
        enqueued_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def wait_until(predicate, what: str, timeout_s: float = 60.0, poll_s: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


REDIS_SERVER = "/usr/bin/redis-server"


@dataclass
class PrivateRedis:
    """A redis-server of this test's own on a fixed loopback port, so it can be killed
    and started again at the same address (the shared one on 6379 is never touched)."""

    port: int
    data_dir: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        log = (self.data_dir / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        wait_until(lambda: self._pings(client), "the private redis-server to answer")

    def _pings(self, client) -> bool:
        assert self.process is not None and self.process.poll() is None, "redis-server exited"
        try:
            return bool(client.ping())
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the append-only file already holds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
