"""Heartbeats and events are never lost nor stored twice: a `mediamill serve` API and a
`mediamill worker` on PostgreSQL and a private Redis (append-only, fsync always), with
players sending heartbeats and event batches all along.

- The worker is SIGKILLed while a flush holds entries it took and had not confirmed;
  a new worker takes them over: the database ends with exactly what was accepted.
- Redis is killed and started again from its append-only file while the buffer holds
  entries no worker flushed: requests meanwhile are refused (503, named), and the
  database ends with exactly what was accepted, once each.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playback_support import packaged_asset
from support import (
    IN_CI,
    POSTGRES_ADMIN_URL,
    REDIS_SERVER,
    PrivateRedis,
    free_port,
    fresh_postgres_database,
    require_service,
    stop_process,
    wait_until,
)

from mediamill.storage import playback as playback_rows
from mediamill.storage.db import Database
from mediamill.workers.playback_buffer import GROUP, STREAM_KEY

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
SESSIONS = 4


@dataclass
class Stack:
    env: dict[str, str]
    redis: PrivateRedis
    db: Database
    api_url: str
    key: str
    asset_id: str
    logs: Path
    worker: subprocess.Popen | None = None
    api: subprocess.Popen | None = None
    workers_started: int = 0

    def start_worker(self) -> None:
        self.workers_started += 1
        log = (self.logs / f"worker-{self.workers_started}.log").open("wb")
        self.worker = subprocess.Popen(
            [*CLI, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


@dataclass
class Sent:
    """What the API accepted (answered 2xx), and what it refused."""

    heartbeats: int = 0
    events: int = 0
    refused: list[int] = field(default_factory=list)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if not Path(REDIS_SERVER).exists():
        message = f"{REDIS_SERVER} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    require_service(POSTGRES_ADMIN_URL, "PostgreSQL")
    (tmp_path / "redis").mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    redis_server = PrivateRedis(free_port(), tmp_path / "redis")
    redis_server.start()
    port = free_port()
    try:
        with fresh_postgres_database() as db_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
            env.update(
                PYTHONUNBUFFERED="1",
                MEDIAMILL_BROKER_URL=redis_server.url,
                MEDIAMILL_DATABASE_URL=db_url,
                MEDIAMILL_STORAGE_URL=(tmp_path / "store").as_uri(),
                MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
                MEDIAMILL_SIGNING_SECRET="durability-secret-0123456789",
                MEDIAMILL_PLAYBACK_RATE_PER_S="100000",
                MEDIAMILL_PLAYBACK_FLUSH_INTERVAL_S="0.2",
                MEDIAMILL_PLAYBACK_FLUSH_BATCH="20",
                MEDIAMILL_PLAYBACK_CLAIM_IDLE_S="2",
                MEDIAMILL_SWEEP_INTERVAL_S="1",
                MEDIAMILL_WORKER_THREADS="2",
            )
            subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, timeout=120)
            created = subprocess.run(
                [*CLI, "keys", "create", "--scope", "playback", "--quiet"],
                env=env, check=True, timeout=120, capture_output=True, text=True,
            )  # fmt: skip
            db = Database(db_url)
            asset_id = packaged_asset(types.SimpleNamespace(db=db), duration_ms=3_600_000)
            running = Stack(
                env=env,
                redis=redis_server,
                db=db,
                api_url=f"http://127.0.0.1:{port}",
                key=created.stdout.strip(),
                asset_id=asset_id,
                logs=logs,
            )
            api_log = (logs / "api.log").open("wb")
            running.api = subprocess.Popen(
                [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=api_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            running.start_worker()
            try:
                wait_until(lambda: _up(running), "the API to answer", 60)
                yield running
            finally:
                for proc in (running.api, running.worker):
                    if proc is not None:
                        stop_process(proc)
                db.dispose()
    finally:
        redis_server.kill()


def _up(stack: Stack) -> bool:
    assert stack.api is not None and stack.api.poll() is None, stack.log_tail()
    try:
        return httpx.get(f"{stack.api_url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _sessions(client: httpx.Client, stack: Stack) -> list[str]:
    ids = []
    for i in range(SESSIONS):
        r = client.post(
            f"/v0/assets/{stack.asset_id}/playback-sessions",
            headers={"X-API-Key": stack.key, "X-Device-Id": f"device-{i}"},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["sessionId"])
    return ids


class Players:
    """Players sending heartbeats and event batches (5 events each, numbered per
    session) round-robin, counting what the API accepted."""

    def __init__(self, stack: Stack, client: httpx.Client, sessions: list[str]) -> None:
        self.stack, self.client, self.sessions = stack, client, sessions
        self.sent = Sent()
        self.seq = {sid: itertools.count() for sid in sessions}
        self.position = 0.0

    def send(self, count: int) -> None:
        headers = {"X-API-Key": self.stack.key}
        for i in range(count):
            sid = self.sessions[i % len(self.sessions)]
            self.position += 0.01
            if i % 10 == 9:
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                seqs = [next(self.seq[sid]) for _ in range(5)]
                events = [{"seq": n, "type": "playing", "timestamp": now} for n in seqs]
                try:
                    r = self.client.post(
                        f"/v0/playback-sessions/{sid}/events",
                        headers=headers, json={"events": events},
                    )  # fmt: skip
                except httpx.HTTPError:
                    self.sent.refused.append(0)
                    continue
                if r.status_code == 200:
                    self.sent.events += 5
                else:
                    self.sent.refused.append(r.status_code)
                continue
            try:
                r = self.client.post(
                    f"/v0/playback-sessions/{sid}/heartbeat",
                    headers=headers, json={"positionSeconds": self.position},
                )  # fmt: skip
            except httpx.HTTPError:
                self.sent.refused.append(0)
                continue
            if r.status_code == 200:
                self.sent.heartbeats += 1
            else:
                self.sent.refused.append(r.status_code)
                if r.status_code != 503:
                    raise AssertionError(r.text)


def _stored(stack: Stack) -> tuple[int, int]:
    with stack.db.session() as s:
        counts = playback_rows.count_stored(s)
    return counts.heartbeats, counts.events


def _redis(stack: Stack):
    import redis

    return redis.Redis.from_url(stack.redis.url, socket_timeout=5)


def _all_stored(stack: Stack, sent: Sent) -> None:
    def done() -> bool:
        assert stack.worker is not None and stack.worker.poll() is None, stack.log_tail()
        return (
            _stored(stack) == (sent.heartbeats, sent.events) and _redis(stack).xlen(STREAM_KEY) == 0
        )

    try:
        wait_until(done, "every accepted record in the database", 60)
    except AssertionError:
        raise AssertionError(
            f"stored {_stored(stack)}, accepted {(sent.heartbeats, sent.events)}\n"
            + stack.log_tail()
        ) from None
    time.sleep(3)  # nothing more arrives later (a second copy, a late flush)
    assert _stored(stack) == (sent.heartbeats, sent.events)


def test_a_worker_killed_mid_flush_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as client:
        players = Players(stack, client, _sessions(client, stack))
        sending = threading.Thread(target=players.send, args=(3000,))
        sending.start()
        client_redis = _redis(stack)

        def taken_not_confirmed() -> bool:
            try:
                return client_redis.xpending(STREAM_KEY, GROUP)["pending"] > 0
            except Exception:  # the group is made by the first flush
                return False

        wait_until(taken_not_confirmed, "a flush holding entries", 60, poll_s=0.001)
        assert stack.worker is not None
        stack.worker.kill()  # SIGKILL, mid-flush
        stack.worker.wait(timeout=30)
        held = client_redis.xpending(STREAM_KEY, GROUP)
        assert held["pending"] > 0 and held["consumers"], held  # the dead worker's
        stack.start_worker()
        sending.join(timeout=300)
        assert not sending.is_alive()
    sent = players.sent
    assert sent.refused == [] and sent.heartbeats == 2700 and sent.events == 1500
    _all_stored(stack, sent)


def test_redis_restarted_from_its_file_loses_nothing(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as client:
        players = Players(stack, client, _sessions(client, stack))
        players.send(200)
        assert stack.worker is not None
        stop_process(stack.worker)  # nothing flushes now: the buffer holds it all
        players.send(800)
        held = _redis(stack).xlen(STREAM_KEY)
        assert held > 0
        stack.redis.kill()  # SIGKILL: only what the append-only file holds survives
        down = players.sent.heartbeats
        players.send(5)
        assert players.sent.heartbeats == down  # refused while Redis is down...
        assert players.sent.refused and set(players.sent.refused) <= {503}, players.sent.refused
        r = client.post(
            f"/v0/playback-sessions/{players.sessions[0]}/heartbeat",
            headers={"X-API-Key": stack.key}, json={"positionSeconds": 1},
        )  # fmt: skip
        assert r.status_code == 503 and r.json()["name"] == "BufferUnavailableError", r.text
        assert int(r.headers["Retry-After"]) >= 1
        stack.redis.start()  # the same port, the same append-only file
        assert _redis(stack).xlen(STREAM_KEY) == held
        players.sent.refused.clear()
        wait_until(lambda: _up(stack), "the API after the restart")
        players.send(200)
        assert players.sent.refused == []
        stack.start_worker()
    _all_stored(stack, players.sent)
    stored = _stored(stack)
    assert stored[0] == players.sent.heartbeats and stored[1] == players.sent.events
    print(json.dumps({"accepted": [players.sent.heartbeats, players.sent.events]}))
