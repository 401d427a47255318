"""workers/worker.py: a starting worker removes the scratch directories of dead
processes (only those); its heartbeat keeps one `workers` row fresh, drops rows gone
silent for ten times `worker_stale_s`, survives a database outage and removes its own
row on a clean stop; the embedded in-process worker sends again, at start, what the
database holds queued, and runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select
from support import wait_job

from mediamill.config.settings import Settings, get_settings
from mediamill.schemas.base import utcnow
from mediamill.schemas.job_params import IngestParams, PathSource
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import repo
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.blobs.base import SCRATCH_PREFIX
from mediamill.storage.db import Database
from mediamill.storage.models import WorkerRow
from mediamill.workers import runtime
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime, current
from mediamill.workers.worker import InProcessWorker, WorkerHeartbeat, remove_orphaned_work_dirs


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Iterator[Runtime]:
    broker = StubBroker()
    yield Runtime(Settings(_env_file=None, worker_stale_s=60), db, LocalBlobStore(tmp_path), broker)
    broker.close()


def _worker_rows(db: Database) -> dict[str, WorkerRow]:
    with db.session() as s:
        return {row.id: row for row in s.scalars(select(WorkerRow))}


def _wait_rows(db: Database, timeout_s: float = 5.0) -> list[WorkerRow]:
    """The `workers` rows once there is one (the heartbeat thread writes its first)."""
    deadline = time.monotonic() + timeout_s
    while not (rows := list(_worker_rows(db).values())) and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_only_scratch_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """A dead pid's dir goes; live pids' dirs and names not of our pattern stay."""
    dead = tmp_path / f"{SCRATCH_PREFIX}{_dead_pid()}-abc"
    kept = [
        tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-mine",
        tmp_path / f"{SCRATCH_PREFIX}1-init",
        tmp_path / f"{SCRATCH_PREFIX}notapid-x",
        tmp_path / "other-123-x",
    ]
    for d in (dead, *kept):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "out.m4a").write_bytes(b"x" * 100)
    assert remove_orphaned_work_dirs(tmp_path) == 1
    assert not dead.exists() and all(d.is_dir() for d in kept)
    assert remove_orphaned_work_dirs(tmp_path) == 0
    assert remove_orphaned_work_dirs(tmp_path / "never-made") == 0


def test_heartbeat_keeps_one_row_fresh_and_forgets_long_silent_workers(rt: Runtime) -> None:
    """beat() upserts this worker's row and drops rows silent for > 10 x worker_stale_s."""
    long_ago, a_while_ago = utcnow() - timedelta(minutes=11), utcnow() - timedelta(minutes=5)
    with rt.db.session() as s:
        for worker_id, seen in (("gone:1:aa", long_ago), ("stale:2:bb", a_while_ago)):
            s.add(WorkerRow(id=worker_id, hostname="h", pid=1, threads=1, seen_at=seen))
    heartbeat = WorkerHeartbeat(rt, threads=3)
    host, pid, suffix = heartbeat.worker_id.split(":")
    assert (host, pid, len(suffix)) == (socket.gethostname(), str(os.getpid()), 8)
    assert heartbeat.interval_s == 15
    heartbeat.beat()
    rows = _worker_rows(rt.db)
    assert set(rows) == {heartbeat.worker_id, "stale:2:bb"}
    mine = rows[heartbeat.worker_id]
    assert (mine.hostname, mine.pid, mine.threads) == (socket.gethostname(), os.getpid(), 3)
    heartbeat.beat()
    again = _worker_rows(rt.db)[heartbeat.worker_id]
    assert again.started_at == mine.started_at and again.seen_at >= mine.seen_at


def test_heartbeat_survives_a_database_outage_and_removes_its_row_on_stop(
    rt: Runtime, tmp_path: Path
) -> None:
    """A failing beat is recorded, not raised; stop() joins the thread and drops the row."""
    working = rt.db
    heartbeat = WorkerHeartbeat(rt, threads=1)
    rt.db = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'jobs.db'}")
    heartbeat.beat()
    assert heartbeat.outage.failing
    rt.db.dispose()
    rt.db = working
    heartbeat.start()  # beats at once, then every interval until stopped
    heartbeat.stop()
    assert not heartbeat.is_alive() and not heartbeat.outage.failing
    assert heartbeat.worker_id not in _worker_rows(rt.db)


@pytest.fixture
def embedded_rt(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """An embedded runtime; the process's current runtime and broker restored after."""
    monkeypatch.setattr(runtime, "_current", runtime._current)
    monkeypatch.setattr(dramatiq.broker, "global_broker", dramatiq.broker.global_broker)
    return build_runtime(get_settings())


def test_embedded_worker_runs_what_was_queued_before_it_started(
    embedded_rt: Runtime, tmp_path: Path
) -> None:
    """A job left queued by a gone process runs at start; the worker's row lives meanwhile."""
    rt = embedded_rt
    missing = tmp_path / "missing.flac"
    params = IngestParams(source=PathSource(path=str(missing)))
    with rt.db.session() as s:
        job_id = repo.create_job(s, JobType.INGEST, JobStage.STORE, params).id
    with InProcessWorker(rt, threads=1) as worker:
        assert current() is rt
        job = wait_job(rt, job_id, timeout_s=10)
        rows = _wait_rows(rt.db)
        assert [(r.id, r.pid, r.threads) for r in rows] == [
            (worker.heartbeat.worker_id, os.getpid(), 1)
        ]
        assert worker.sweeper.interval_s == InProcessWorker.EMBEDDED_SWEEP_INTERVAL_S
    assert job.status == "failed"
    assert (job.error.name, job.error.message) == (
        "InvalidRequestError",
        f"source file not found: {missing}",
    )
    assert _worker_rows(rt.db) == {}
