"""The hostile input corpus (scripts/make_hostile_corpus.py) through the embedded
pipeline with the default limits and time limits: every bad file fails with its named
error within 30 s of submission, the worker survives, no temporary file is left and
every stored original stays stored."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from support import _load_script, make_sample

from mediamill.config.settings import get_settings
from mediamill.schemas.jobs import Job
from mediamill.storage import repo
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_local_file
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration

hostile = _load_script("make_hostile_corpus")

FAIL_WITHIN_S = 30.0
SUCCEED_WITHIN_S = 120.0


@pytest.fixture
def worker(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessWorker:
    monkeypatch.setenv("MEDIAMILL_RETRY_MIN_BACKOFF_MS", "20")
    monkeypatch.setenv("MEDIAMILL_RETRY_MAX_BACKOFF_MS", "100")
    get_settings.cache_clear()
    with InProcessWorker(build_runtime(get_settings()), threads=2) as running:
        yield running


def run_job(rt: Runtime, path: Path, timeout_s: float) -> tuple[Job, float]:
    """Submit `path` and wait for its job to end: (job, seconds from submission)."""
    started = time.monotonic()
    job_id = submit_local_file(rt, path, stage_in_store=False).id
    job = None
    while time.monotonic() - started < timeout_s:
        with rt.db.session() as s:
            job = repo.load_job(s, job_id)
        if job.status.terminal:
            return job, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{path.name!r}: job {job_id} still {job.status} after {timeout_s} s")


def leftovers(rt: Runtime) -> list[Path]:
    """Files under the work dir and the local store's temporary dir."""
    tmp_dirs = [
        rt.settings.resolved_work_dir,
        Path(urlparse(rt.settings.resolved_storage_url).path) / ".tmp",
    ]
    return [p for d in tmp_dirs if d.exists() for p in d.rglob("*")]


def test_hostile_corpus_fails_with_named_errors(worker: InProcessWorker, tmp_path: Path) -> None:
    rt = worker.rt
    corpus = hostile.make_hostile_corpus(tmp_path / "hostile")
    must_fail = hostile.expected_failures(corpus)
    assert len(must_fail) >= 30
    problems: list[str] = []
    not_stored: list[str] = []
    slowest_s, slowest = 0.0, ""
    for name, (path, _expected) in corpus.items():
        wants = must_fail.get(name)
        job, elapsed_s = run_job(rt, path, FAIL_WITHIN_S if wants else SUCCEED_WITHIN_S)
        got = job.error.name if job.error else None
        if wants is not None and elapsed_s > slowest_s:
            slowest_s, slowest = elapsed_s, name
        if wants is None and job.status != "succeeded":
            problems.append(f"{name!r}: expected success, got {job.status} {got}")
        elif wants is not None and (job.status != "failed" or got not in wants):
            problems.append(f"{name!r}: expected {sorted(wants)}, got {job.status} {got}")
        elif wants is not None and elapsed_s > FAIL_WITHIN_S:
            problems.append(f"{name!r}: failed after {elapsed_s:.1f} s")
        if job.asset_id is None:
            not_stored.append(name)
            continue
        with rt.db.session() as s:
            key = repo.get_asset_row(s, job.asset_id).storage_key
        if not rt.store.exists(key):
            problems.append(f"{name!r}: original {key} is gone")
    assert not problems, "\n".join(problems)
    print(f"{len(must_fail)} failed as expected; slowest: {slowest!r} in {slowest_s:.1f} s")
    # Every file is stored before it is looked at: none is rejected unstored.
    assert not_stored == []

    # No worker thread died, and the worker still does good work.
    assert worker.worker is not None and len(worker.worker.workers) == 2
    assert all(t.is_alive() for t in worker.worker.workers)
    good = make_sample(tmp_path / "good.flac", kind="music", duration_s=2.0, channels=1)
    ok, _ = run_job(rt, good, SUCCEED_WITHIN_S)
    assert ok.status == "succeeded", ok.error
    assert leftovers(rt) == []
