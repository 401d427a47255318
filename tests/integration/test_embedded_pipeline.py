"""Ingest and analysis through the queue on the embedded default (SQLite, local store,
StubBroker with an in-process worker): real files in, real rows and blobs out."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
from media_corpus import make_bad_inputs
from support import raw_job, wait_job

from mediamill.config.settings import get_settings
from mediamill.storage import outbox, repo
from mediamill.storage.models import JobRow
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_local_file
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("MEDIAMILL_RETRY_MIN_BACKOFF_MS", "20")
    monkeypatch.setenv("MEDIAMILL_RETRY_MAX_BACKOFF_MS", "100")
    get_settings.cache_clear()
    runtime = build_runtime(get_settings())
    with InProcessWorker(runtime, threads=2):
        yield runtime


def events(rt: Runtime, event_type: str) -> list:
    with rt.db.session() as s:
        return outbox.list_events(s, event_type)


def test_ingest_then_analyse_records_the_asset(rt: Runtime, samples: dict[str, Path]) -> None:
    path = samples["music.flac"]
    job = wait_job(rt, submit_local_file(rt, path, stage_in_store=False).id)
    assert job.status == "succeeded" and job.stage == "done" and job.progress == 1.0
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert job.asset_id == sha and job.attempts == 1
    with rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, sha))
    assert asset.status == "analysed"
    assert (asset.container, asset.codec, asset.channels, asset.sample_rate_hz) == (
        "flac",
        "flac",
        2,
        48000,
    )
    assert abs(asset.duration_ms - 6000) <= 1
    assert asset.integrated_lufs is not None and -40 < asset.integrated_lufs < -5
    assert asset.true_peak_dbtp >= asset.sample_peak_dbfs - 0.01
    with rt.store.open(f"originals/{sha}") as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha
    assert [e.data["asset"]["originalAssetId"] for e in events(rt, "asset.created")] == [sha]
    analysed = events(rt, "asset.analysed")
    assert len(analysed) == 1 and analysed[0].data["asset"]["lufs"] == asset.integrated_lufs


def test_same_bytes_are_one_asset_analysed_once(
    rt: Runtime, samples: dict[str, Path], tmp_path: Path
) -> None:
    copies = [shutil.copy(samples["speech.wav"], tmp_path / f"copy{i}.wav") for i in range(3)]
    ids = [submit_local_file(rt, Path(c), stage_in_store=False).id for c in copies]
    jobs = [wait_job(rt, i) for i in ids]
    assert {j.status for j in jobs} == {"succeeded"}
    assert len({j.asset_id for j in jobs}) == 1
    assert len(events(rt, "asset.analysed")) == 1
    assert len(events(rt, "asset.created")) == 1
    # Once analysed, the same bytes again finish without touching analysis.
    again = wait_job(rt, submit_local_file(rt, Path(copies[0]), stage_in_store=False).id)
    assert again.result == {"deduplicated": True}
    assert len(events(rt, "asset.analysed")) == 1
    assert list(rt.store.list("originals/")) == [f"originals/{jobs[0].asset_id}"]


def test_bad_input_fails_with_a_named_error_and_keeps_the_original(
    rt: Runtime, samples: dict[str, Path], tmp_path: Path
) -> None:
    bad = make_bad_inputs(tmp_path / "bad", samples["music.flac"], samples["music.mp3"])
    for name, (path, error_name) in bad.items():
        job = wait_job(rt, submit_local_file(rt, path, stage_in_store=False).id)
        assert job.status == "failed", name
        assert job.error is not None and job.error.name == error_name, (name, job.error)
        assert job.attempts == 1, f"{name}: a permanent failure must not be retried"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert rt.store.exists(f"originals/{sha}"), f"{name}: original must stay stored"
        with rt.db.session() as s:
            assert repo.get_asset_row(s, sha).status == "failed"
    assert len(events(rt, "job.failed")) == len(bad)
    # The worker is still alive and well.
    ok = wait_job(rt, submit_local_file(rt, samples["mono.flac"], stage_in_store=False).id)
    assert ok.status == "succeeded"


def test_transient_failures_are_retried_with_backoff(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediamill.schemas.errors import StorageError
    from mediamill.workers.native import NativePool

    real = NativePool.analyse
    calls = []

    def flaky(pool, path, **kwargs):
        calls.append(path)
        if len(calls) < 3:
            raise StorageError("store hiccup")
        return real(pool, path, **kwargs)

    monkeypatch.setattr(NativePool, "analyse", flaky)
    monkeypatch.setattr(rt.settings, "default_audio_renditions", "")  # end at analysis
    monkeypatch.setattr(rt.settings, "package_audio_ladder", "")
    job = wait_job(rt, submit_local_file(rt, samples["music44.flac"], stage_in_store=False).id)
    assert job.status == "succeeded"
    assert len(calls) == 3
    with rt.db.session() as s:
        assert repo.get_job_row(s, job.id).attempts == 3


def test_transient_failures_give_up_after_max_retries(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediamill.schemas.errors import StorageError
    from mediamill.workers.native import NativePool

    def broken(pool, path, **kwargs):
        raise StorageError("store is down")

    monkeypatch.setattr(NativePool, "analyse", broken)
    job = wait_job(rt, submit_local_file(rt, samples["music.ogg"], stage_in_store=False).id)
    assert job.status == "failed" and job.error.name == "StorageError"
    assert job.attempts == rt.settings.max_retries + 1
    with rt.db.session() as s:  # a transient failure does not condemn the asset
        assert repo.get_asset_row(s, job.asset_id).status == "stored"


def test_sweeper_resends_jobs_whose_message_was_lost(rt: Runtime, samples: dict[str, Path]) -> None:
    from mediamill.schemas.jobs import JobStage, JobType
    from mediamill.workers.sweeper import sweep

    with rt.db.session() as s:  # a row whose enqueue never happened
        row = raw_job(
            s,
            JobType.INGEST,
            JobStage.STORE,
            {"source": {"kind": "path", "path": str(samples["music.m4a"])}, "filename": "x.m4a"},
        )
    time.sleep(0.3)
    with rt.db.session() as s:
        assert s.get(JobRow, row.id).status == "queued"
    assert sweep(rt, queued_older_than_s=0) == 1
    assert wait_job(rt, row.id).status == "succeeded"


def test_analyse_message_time_limit_scales_with_duration(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rt.settings, "default_audio_renditions", "")  # stop after analysis
    monkeypatch.setattr(rt.settings, "package_audio_ladder", "")
    job = wait_job(rt, submit_local_file(rt, samples["music.flac"], stage_in_store=False).id)
    with rt.db.session() as s:
        params = repo.get_job_row(s, job.id).params
    expected_s = rt.settings.time_limit_base_s + rt.settings.time_limit_per_media_s * 6.0
    assert abs(params["timeLimitMs"] - expected_s * 1000) < 50


def test_time_limit_stops_an_overlong_analysis_without_retrying(
    embedded_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stage past its (duration-scaled) limit fails with ProcessingTimeoutError at once."""
    from support import make_sample

    # A sine compresses to a small file (quick to store) but takes as long to decode:
    # 30 min analyse in about 6 s here, while the 1.18 s limit strikes within 2.2 s
    # (dramatiq's TimeLimit looks once a second). With 15 min and a 1.45 s limit, a fast
    # host finished the analysis before the limit struck.
    path = make_sample(tmp_path / "long.flac", kind="sine", duration_s=1800)
    monkeypatch.setenv("MEDIAMILL_TIME_LIMIT_BASE_S", "1.0")
    monkeypatch.setenv("MEDIAMILL_TIME_LIMIT_PER_MEDIA_S", "0.0001")
    get_settings.cache_clear()
    runtime = build_runtime(get_settings())
    with InProcessWorker(runtime, threads=1):
        job = wait_job(runtime, submit_local_file(runtime, path, stage_in_store=False).id)
    assert job.status == "failed" and job.error.name == "ProcessingTimeoutError"
    assert job.stage == "analyse" and job.attempts == 1
    with runtime.db.session() as s:
        params = repo.get_job_row(s, job.id).params
        asset = repo.get_asset_row(s, job.asset_id)
    assert params["timeLimitMs"] == 1180  # 1.0 s + 0.0001 s per second of 1800 s media
    assert asset.status == "stored", "a timeout does not condemn the media"


def test_video_asset_gets_its_ladder_without_upscaling(
    rt: Runtime, samples: dict[str, Path]
) -> None:
    job = wait_job(rt, submit_local_file(rt, samples["video.mp4"], stage_in_store=False).id)
    assert job.status == "succeeded", job
    assert len(job.children) == 4 and {c.status for c in job.children} == {"succeeded"}
    with rt.db.session() as s:
        renditions = repo.list_renditions(s, job.asset_id)
    assert sorted(r.height for r in renditions) == [240, 360, 480, 720], "no 1080 from 720"
    for r in renditions:
        assert r.status == "ready" and r.codec == "aac" and r.width % 2 == 0
        with rt.store.open(r.storage_key) as f:
            assert hashlib.sha256(f.read()).hexdigest() == r.sha256
    assert len(events(rt, "rendition.ready")) == 4


def test_ingest_deletes_only_the_copies_it_staged(rt: Runtime, samples: dict[str, Path]) -> None:
    """A source under `incoming/` that the job does not mark `staged` (someone else's
    bytes) is left alone; a copy the server staged for the job is removed."""
    from mediamill.schemas.job_params import StoreSource
    from mediamill.workers.submit import submit_ingest

    with samples["music.ogg"].open("rb") as f:
        rt.store.put("incoming/another-upload", f)
    foreign = submit_ingest(rt, StoreSource(key="incoming/another-upload"), "a.ogg", 0)
    assert wait_job(rt, foreign.id).status == "succeeded"
    assert rt.store.exists("incoming/another-upload")

    staged = submit_local_file(rt, samples["music.flac"], stage_in_store=True)
    assert staged.params["staged"] is True
    key = staged.params["source"]["key"]
    assert key.startswith("incoming/")
    assert wait_job(rt, staged.id).status == "succeeded"
    assert not rt.store.exists(key)
