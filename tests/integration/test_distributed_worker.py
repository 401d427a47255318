"""The distributed set-up for real: `mediamill worker` processes on Redis (and RabbitMQ),
PostgreSQL and the S3 endpoint, driven through the CLI like an operator would."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_corpus import make_bad_inputs

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(f"{request.param}_url")
    if request.param == "redis":
        import redis

        redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def stack_env(broker_url: str, moto_server, tmp_path: Path) -> Iterator[dict[str, str]]:
    from integration.conftest import distributed_env

    with distributed_env(
        moto_server, broker_url, tmp_path / "data", MEDIAMILL_SWEEP_INTERVAL_S="1"
    ) as env:
        yield env


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"mediamill {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def wait_job(env: dict[str, str], job_id: str, worker: subprocess.Popen, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = json.loads(cli(env, "jobs", "show", job_id, "--json").stdout)
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        assert worker.poll() is None, f"worker died:\n{worker.stderr.read()}"
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_worker_process_ingests_and_analyses(
    stack_env: dict[str, str], samples: dict[str, Path], tmp_path: Path
) -> None:
    cli(stack_env, "db", "upgrade")
    worker = subprocess.Popen(
        [*CLI, "worker", "--threads", "2"], env=stack_env, stderr=subprocess.PIPE, text=True
    )
    try:
        submitted = json.loads(
            cli(stack_env, "ingest", str(samples["music.flac"]), "--json").stdout
        )
        assert submitted["status"] in {"queued", "running"} and submitted["type"] == "ingest"
        job = wait_job(stack_env, submitted["id"], worker)
        assert job["status"] == "succeeded", job
        sha = hashlib.sha256(samples["music.flac"].read_bytes()).hexdigest()
        assert job["assetId"] == sha

        bad = make_bad_inputs(tmp_path / "bad", samples["music.flac"], samples["music.mp3"])
        path, error_name = bad["truncated.flac"]
        failed_id = cli(stack_env, "ingest", str(path)).stdout.strip()
        failed = wait_job(stack_env, failed_id, worker)
        assert failed["status"] == "failed" and failed["error"]["name"] == error_name

        ok_id = cli(stack_env, "ingest", str(samples["surround.flac"])).stdout.strip()
        assert wait_job(stack_env, ok_id, worker)["status"] == "succeeded"

        listed = json.loads(cli(stack_env, "jobs", "list", "--json").stdout)
        assert {j["id"] for j in listed["data"]} == {submitted["id"], failed_id, ok_id}
        only_failed = json.loads(
            cli(stack_env, "jobs", "list", "--status", "failed", "--json").stdout
        )
        assert [j["id"] for j in only_failed["data"]] == [failed_id]

        # Staged uploads are gone; originals are stored under their SHA-256.
        from integration.conftest import settings_from_env

        from mediamill.storage.blobs import open_store

        store = open_store(settings_from_env(stack_env))
        assert list(store.list("incoming/")) == []
        originals = list(store.list("originals/"))
        assert f"originals/{sha}" in originals and len(originals) == 3
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0
