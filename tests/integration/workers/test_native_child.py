"""A real crash of native media code fails one job, not a worker: two `mediamill worker`
processes on Redis, PostgreSQL and S3 (moto), files that make the decoding child die by
SIGSEGV and by SIGKILL among ten good ones."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import make_sample

from mediamill.storage import outbox
from mediamill.workers.native_child import CRASH_MARKER

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
GOOD_JOBS = 10
TIMEOUT_S = 240


@pytest.fixture
def stack_env(redis_url: str, moto_server, tmp_path: Path) -> Iterator[dict[str, str]]:
    import redis
    from integration.conftest import distributed_env

    redis.Redis.from_url(redis_url).flushdb()
    with distributed_env(
        moto_server,
        redis_url,
        tmp_path / "data",
        MEDIAMILL_SWEEP_INTERVAL_S="1",
        MEDIAMILL_TEST_CRASHES="true",
        MEDIAMILL_DEFAULT_AUDIO_RENDITIONS="mp3:128000:2",
        MEDIAMILL_PACKAGE_AUDIO_LADDER="aac:64000:2",
    ) as env:
        yield env


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mediamill {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def crash_file(d: Path, signal_name: str) -> Path:
    path = d / f"crash-{signal_name}.wav"
    path.write_bytes(CRASH_MARKER + signal_name.encode() + b"\n" + os.urandom(4096))
    return path


def test_a_crashing_file_fails_its_job_and_every_worker_goes_on(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    cli(stack_env, "db", "upgrade")
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [
        subprocess.Popen(
            [*CLI, "worker", "--threads", "2"],
            env=stack_env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        for log in logs
    ]
    try:
        good = [
            make_sample(tmp_path / f"good-{i}.flac", duration_s=2.0, variant=i)
            for i in range(GOOD_JOBS)
        ]
        crashes = {name: crash_file(tmp_path, name) for name in ("SIGSEGV", "SIGKILL")}
        files = [*good[:5], crashes["SIGSEGV"], *good[5:], crashes["SIGKILL"]]
        job_ids = {str(f): cli(stack_env, "ingest", str(f)).strip() for f in files}
        jobs: dict[str, dict] = {}
        deadline = time.monotonic() + TIMEOUT_S
        while len(jobs) < len(files) and time.monotonic() < deadline:
            for path, job_id in job_ids.items():
                if path not in jobs:
                    job = json.loads(cli(stack_env, "jobs", "show", job_id, "--json"))
                    if job["status"] in {"succeeded", "failed", "cancelled"}:
                        jobs[path] = job
            time.sleep(0.5)
        assert len(jobs) == len(files), f"unfinished: {set(job_ids) - set(jobs)}"

        for path in good:
            assert jobs[str(path)]["status"] == "succeeded", jobs[str(path)]
        for name, path in crashes.items():
            job = jobs[str(path)]
            assert job["status"] == "failed" and job["stage"] == "analyse", job
            assert job["error"]["name"] == "WorkerCrashedError"
            assert f"died by {name} (2 tries)" in job["error"]["message"]
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, f"a worker exited:\n{log.read_text()[-3000:]}"

        # The verdict stands: the same bytes again fail at once, nothing is decoded.
        before = sum(log.read_text().count("native process died") for log in logs)
        again = cli(stack_env, "ingest", str(crashes["SIGSEGV"])).strip()
        deadline = time.monotonic() + 60
        while (job := json.loads(cli(stack_env, "jobs", "show", again, "--json")))[
            "status"
        ] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["error"]["name"] == "WorkerCrashedError", job
        assert sum(log.read_text().count("native process died") for log in logs) == before
        from integration.conftest import settings_from_env

        from mediamill.storage import repo
        from mediamill.storage.blobs import open_store
        from mediamill.storage.db import database_for

        settings = settings_from_env(stack_env)
        store, db = open_store(settings), database_for(settings.resolved_database_url)
        with db.session() as s:
            failed = {e.data["job"]["id"] for e in outbox.list_events(s, "job.failed")}
            crashed = {job_ids[str(p)] for p in crashes.values()}
            assert failed == crashed | {again}
            for path in crashes.values():
                asset = repo.get_asset_row(s, jobs[str(path)]["assetId"])
                assert (asset.status, asset.error_name) == ("failed", "WorkerCrashedError")
                assert store.exists(asset.storage_key)  # the original stays stored
        db.dispose()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(timeout=60) == 0


def test_a_read_of_a_crashed_asset_does_not_decode_it_again(embedded_env, tmp_path: Path) -> None:
    """The server, with its in-process worker, survives the crash; the asset is failed,
    so GET /v0/assets/{id}/streams answers at once and starts no analysis."""
    from api_support import running_api

    from mediamill.config.settings import Settings
    from mediamill.storage import repo
    from mediamill.storage.models import JobRow

    settings = Settings(_env_file=None, data_dir=embedded_env, test_crashes=True)
    path = crash_file(tmp_path, "SIGSEGV")
    with running_api(settings) as api:
        with path.open("rb") as f:
            r = api.client.post(
                "/v0/assets?wait=30", headers=api.admin, files={"assetfile": ("x.wav", f)}
            )
        # The upload waited for the analysis: its answer is the crash, named.
        assert r.status_code == 422, r.text
        assert r.json()["name"] == "WorkerCrashedError" and "SIGSEGV" in r.json()["message"]
        asset_id = hashlib.sha256(path.read_bytes()).hexdigest()
        with api.rt.db.session() as s:
            jobs_before = s.query(JobRow).count()
            assert repo.get_asset_row(s, asset_id).error_name == "WorkerCrashedError"
        for _ in range(3):
            r = api.client.get(f"/v0/assets/{asset_id}/streams", headers=api.read)
            assert r.status_code != 200 and r.json()["name"] == "ModelInvalidError", r.text
        with api.rt.db.session() as s:
            assert s.query(JobRow).count() == jobs_before  # nothing started
        assert api.client.get("/health").status_code == 200
