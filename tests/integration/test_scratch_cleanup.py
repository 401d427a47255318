"""Temporary space is cleaned up on every exit path: a stage that succeeds, one whose
ffmpeg run passes its wall-clock limit, one whose store write fails and is retried,
and a worker killed mid-stage (its leftovers are removed when a worker starts). The
store is S3 (moto), so the downloads of originals for decoding are covered too."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import make_sample, wait_job

from mediamill.config.settings import get_settings
from mediamill.storage import repo
from mediamill.storage.blobs.base import SCRATCH_PREFIX
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_local_file
from mediamill.workers.worker import InProcessWorker, remove_orphaned_work_dirs

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(embedded_env: Path, moto_server, monkeypatch: pytest.MonkeyPatch):
    """An in-process worker on SQLite and a fresh bucket of the moto S3 server."""
    from integration.conftest import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, make_s3_store

    make_s3_store(moto_server, "scratch")
    for name, value in {
        "STORAGE_URL": "s3://scratch/mm",
        "S3_ENDPOINT_URL": moto_server.endpoint_url,
        "S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
        "DATABASE_URL": f"sqlite:///{embedded_env / 'mm.db'}",
        "SIGNING_SECRET": "scratch-test-secret-0123456789",
        "RETRY_MIN_BACKOFF_MS": "20",
        "RETRY_MAX_BACKOFF_MS": "100",
        "PACKAGE_AUDIO_LADDER": "aac:64000:2",
    }.items():
        monkeypatch.setenv(f"MEDIAMILL_{name}", value)
    get_settings.cache_clear()
    rt = build_runtime(get_settings())
    rt.db.ensure_schema()
    with InProcessWorker(rt, threads=2) as running:
        yield running
    rt.db.dispose()
    moto_server.reset()


def scratch(rt: Runtime) -> list[Path]:
    """Everything under the work dir, and this process's scratch dirs in the system tmp."""
    work = rt.settings.resolved_work_dir
    found = list(work.rglob("*")) if work.exists() else []
    return found + list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{os.getpid()}-*"))


def stored_under(rt: Runtime, prefix: str) -> list[str]:
    return list(rt.store.list(prefix))


def test_success_leaves_no_scratch(worker: InProcessWorker, tmp_path: Path) -> None:
    rt = worker.rt
    source = make_sample(tmp_path / "a.flac", kind="music", duration_s=3.0)
    job = wait_job(rt, submit_local_file(rt, source, stage_in_store=True).id, timeout_s=120)
    assert job.status == "succeeded", job.error
    with rt.db.session() as s:
        renditions = repo.list_renditions(s, job.asset_id)
    assert len(renditions) == 4 and all(r.status.value == "ready" for r in renditions)
    assert stored_under(rt, "incoming/") == []
    assert scratch(rt) == []


def test_an_ffmpeg_run_past_its_limit_leaves_no_scratch(
    worker: InProcessWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transcode gets a wall-clock limit far below what its encodes need: ffmpeg
    is killed, the job fails with ProcessingTimeoutError, nothing is left behind."""
    from mediamill.workers import actors

    monkeypatch.setattr(actors, "transcode_time_limit_ms", lambda *a: 300)
    rt = worker.rt
    source = make_sample(tmp_path / "long.flac", kind="music", duration_s=120.0)
    job = wait_job(rt, submit_local_file(rt, source, stage_in_store=True).id, timeout_s=120)
    assert job.status == "failed" and job.error.name == "ProcessingTimeoutError", job
    assert job.stage == "transcode"
    assert stored_under(rt, "renditions/") == []
    assert scratch(rt) == []
    running = subprocess.run(["pgrep", "-f", str(rt.settings.resolved_work_dir)], check=False)
    assert running.returncode == 1, "an ffmpeg writing into the work dir is still running"


def test_a_failed_store_write_is_retried_and_leaves_no_scratch(
    worker: InProcessWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediamill.schemas.errors import StorageError

    rt = worker.rt
    real_put = rt.store.put
    failures: list[str] = []

    def put(key: str, stream, **kwargs):
        if key.startswith("renditions/") and not failures:
            failures.append(key)
            raise StorageError("the store hiccuped")
        return real_put(key, stream, **kwargs)

    monkeypatch.setattr(rt.store, "put", put)
    source = make_sample(tmp_path / "b.flac", kind="music", duration_s=3.0, variant=1)
    job = wait_job(rt, submit_local_file(rt, source, stage_in_store=True).id, timeout_s=120)
    assert job.status == "succeeded", job.error
    assert len(failures) == 1  # the transcode failed once, then was retried
    with rt.db.session() as s:
        renditions = repo.list_renditions(s, job.asset_id)
    assert f"{failures[0]}" in {r.storage_key for r in renditions if r.status.value == "ready"}
    assert scratch(rt) == []


def test_leftovers_of_dead_processes_are_removed_at_worker_start(tmp_path: Path) -> None:
    work = tmp_path / "work"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = work / f"{SCRATCH_PREFIX}{os.getpid()}-abc"
    theirs = work / f"{SCRATCH_PREFIX}{dead.pid}-def"
    for d in (mine, theirs):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "out.m4a").write_bytes(b"x" * 100)
    assert remove_orphaned_work_dirs(work) == 1
    assert mine.exists() and not theirs.exists()
