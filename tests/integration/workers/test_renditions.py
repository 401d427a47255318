"""Renditions through the queue: exactly-once on-request enqueue from many processes
(PostgreSQL + Redis), the default profiles after analysis, and a worker killed
mid-transcode leaving nothing under a final key."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from support import fresh_postgres_database, make_sample

from mediamill.config.settings import Settings
from mediamill.pipeline.analysis import analyse_file
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec
from mediamill.storage import repo
from mediamill.storage.models import JobRow, RenditionRow
from mediamill.workers.boot import build_runtime
from mediamill.workers.renditions import request_rendition
from mediamill.workers.runtime import set_current
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration

REQUESTER = r"""
import sys, time, json
from mediamill.config.settings import Settings
from mediamill.schemas.renditions import RenditionSpec
from mediamill.workers.renditions import request_rendition
from mediamill.workers.boot import build_runtime
rt = build_runtime(Settings())
spec = RenditionSpec.model_validate_json(sys.argv[2])
while time.time() < float(sys.argv[3]):
    time.sleep(0.001)
r = request_rendition(rt, sys.argv[1], spec, exact=False)
print(json.dumps({"id": r.id, "status": r.status.value}))
"""


def stored_analysed_asset(rt, path: Path) -> str:
    """Store and analyse an original directly (the ingest/analyse actors are tested elsewhere)."""
    with path.open("rb") as f:
        blob, _ = rt.store.put_content_addressed("originals", f)
    with rt.db.session() as s:
        repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, path.name)
        repo.record_analysis(repo.get_asset_row(s, blob.sha256), analyse_file(path))
    return blob.sha256


def test_on_request_rendition_is_enqueued_exactly_once_across_processes(
    redis_url: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    with fresh_postgres_database() as db_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_BROKER_URL=redis_url,
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_STORAGE_URL=(tmp_path / "store").as_uri(),
            MEDIAMILL_SIGNING_SECRET="test-signing-secret-0123456789",
            MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
        )
        settings = Settings(
            **{k[10:].lower(): v for k, v in env.items() if k.startswith("MEDIAMILL_")}
        )
        rt = build_runtime(settings)
        rt.db.upgrade()
        asset_id = stored_analysed_asset(rt, samples["music.flac"])
        spec = RenditionSpec(format=RenditionFormat.OGG, bitrate_bps=128000, channels=2)
        start_at = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    REQUESTER,
                    asset_id,
                    spec.model_dump_json(by_alias=True),
                    str(start_at),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        answers = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            answers.append(json.loads(out))
        assert len({a["id"] for a in answers}) == 1, "every caller sees the same rendition"
        assert {a["status"] for a in answers} == {"queued"}
        with rt.db.session() as s:
            assert s.query(RenditionRow).count() == 1
            assert s.query(JobRow).filter(JobRow.type == "transcode").count() == 1
            assert s.query(JobRow).filter(JobRow.type == "rendition").count() == 1
        assert r.hlen("dramatiq:mediamill.msgs") == 1, "exactly one message was sent"

        set_current(rt)
        with InProcessWorker(rt, threads=1, sweep=False):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = request_rendition(rt, asset_id, spec, exact=False)
                if got.status.value in {"ready", "failed"}:
                    break
                time.sleep(0.2)
        assert got.status.value == "ready", got
        assert got.codec == "vorbis" and got.channels == 2
        with rt.store.open(got.storage_key) as f:
            assert hashlib.sha256(f.read()).hexdigest() == got.sha256
        with rt.db.session() as s:
            assert s.query(JobRow).filter(JobRow.type == "transcode").count() == 1
        rt.db.dispose()


def test_worker_killed_mid_transcode_leaves_no_partial_rendition(tmp_path: Path) -> None:
    """SIGKILL the worker (and its ffmpeg) while the default renditions are being
    encoded: nothing appears under renditions/; a new worker takes the job over
    once the lease has lapsed and finishes it."""
    source = make_sample(tmp_path / "long.flac", kind="music", duration_s=400)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    # The default profile only (no package ladder), so the job ends with its transcode.
    env.update(
        MEDIAMILL_DATA_DIR=str(data), MEDIAMILL_JOB_LEASE_S="3", MEDIAMILL_PACKAGE_AUDIO_LADDER=""
    )
    cli = [sys.executable, "-m", "mediamill"]
    job_id = subprocess.run(
        [*cli, "ingest", str(source)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    settings = Settings(data_dir=data)
    from mediamill.storage.db import Database

    db = Database(settings.resolved_database_url)
    worker = subprocess.Popen(
        [*cli, "worker"], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with db.session() as s:
                row = repo.get_job_row(s, job_id)
                stage, status, progress = row.stage, row.status, row.progress
            if stage == "transcode" and status == "running" and progress > 0.05:
                break
            time.sleep(0.1)
        assert (stage, status) == ("transcode", "running")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    store = data / "store"
    assert not (store / "renditions").exists() or not any((store / "renditions").rglob("*.*"))
    assert any((data / "work").glob("mediamill-*")), "the killed worker left its work dir"
    with db.session() as s:
        assert repo.get_job_row(s, job_id).status == "running"  # orphaned, for now
    worker = subprocess.Popen(
        [*cli, "worker"], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with db.session() as s:
                job = repo.load_job(s, job_id)
            if job.status.terminal:
                break
            time.sleep(0.5)
        assert job.status == "succeeded", job
        assert job.attempts == 2
        assert not any((data / "work").glob("mediamill-*")), "leftovers were cleaned up"
        with db.session() as s:
            renditions = repo.list_renditions(s, job.asset_id)
        assert len(renditions) == 3 and {r.status.value for r in renditions} == {"ready"}
        for r in renditions:
            path = store / r.storage_key
            assert hashlib.sha256(path.read_bytes()).hexdigest() == r.sha256
            assert abs(r.duration_ms - 400_000) <= 50
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    db.dispose()
