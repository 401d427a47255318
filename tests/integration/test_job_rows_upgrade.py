"""Job rows written by the version before the typed job contract (their parameters
as hand-built dicts, `job_rows_v0`) still run after the upgrade: each kind of row,
queued or half done, is picked up by today's actors and ends with real outputs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import pytest
from job_rows_v0 import (
    ingest_from_path,
    ingest_of_bucket_event,
    ingest_of_stored,
    ingest_of_upload,
    ingest_staged,
    ingest_stored_then_died,
    ingest_with_plan,
    package_job,
    rendition_child,
    transcode_on_request,
)
from support import raw_job, wait_job

from mediamill.config.settings import get_settings
from mediamill.schemas.base import utcnow
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec
from mediamill.storage import repo
from mediamill.storage.models import UploadRow
from mediamill.workers.boot import build_runtime
from mediamill.workers.queue import send_committed
from mediamill.workers.runtime import Runtime
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("MEDIAMILL_DEFAULT_AUDIO_RENDITIONS", "mp3:128000:2")
    monkeypatch.setenv("MEDIAMILL_PACKAGE_AUDIO_LADDER", "aac:64000:2")
    get_settings.cache_clear()
    runtime = build_runtime(get_settings())
    with InProcessWorker(runtime, threads=2):
        yield runtime


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(rt: Runtime, job_type: JobType, stage: JobStage, params: dict, **kw) -> str:
    """Write one old row, send its message as the old version would have, its id."""
    with rt.db.session() as s:
        row = raw_job(s, job_type, stage, params, **kw)
    send_committed(rt, row)
    return row.id


def _decoded(rt: Runtime, key: str) -> tuple[int, int, float]:
    """(channels, sample rate, seconds) of a stored audio file, decoded to its end."""
    with rt.store.open(key) as f, av.open(io.BytesIO(f.read())) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.channels, stream.rate, samples / stream.rate


def _analysed(rt: Runtime, job_id: str, path: Path) -> None:
    job = wait_job(rt, job_id, timeout_s=120)
    assert job.status == "succeeded", job.error
    assert job.asset_id == _sha(path)
    with rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id))
    assert asset.status == "analysed" and asset.integrated_lufs is not None
    with rt.store.open(f"originals/{asset.original_asset_id}") as f:
        assert hashlib.sha256(f.read()).hexdigest() == asset.original_asset_id


def test_old_ingest_rows_of_every_writer_run(rt: Runtime, samples: dict[str, Path]) -> None:
    path = samples["music.flac"]
    by_path = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_from_path(str(path), path.name, path.stat().st_size),
    )

    staged = samples["speech.wav"]
    rt.store.put("incoming/old-staged", io.BytesIO(staged.read_bytes()))
    by_staged = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_staged("incoming/old-staged", staged.name, staged.stat().st_size),
    )

    planned = samples["music44.flac"]
    rt.store.put("inbox/planned.flac", io.BytesIO(planned.read_bytes()))
    by_plan = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_with_plan("inbox/planned.flac", planned.name, planned.stat().st_size),
    )

    uploaded = samples["mono.flac"]
    rt.store.put("incoming/u-old.1", io.BytesIO(uploaded.read_bytes()))
    upload_params = ingest_of_upload(
        "incoming/u-old.1", uploaded.name, uploaded.stat().st_size, "u-old"
    )
    by_upload = _run(rt, JobType.INGEST, JobStage.STORE, upload_params)
    with rt.db.session() as s:
        s.add(
            UploadRow(
                id="u-old",
                status="processing",
                filename=uploaded.name,
                content_type="audio/flac",
                size_bytes=uploaded.stat().st_size,
                storage_key="incoming/u-old",
                upload_url_expires_at=utcnow(),
                job_id=by_upload,
            )
        )

    bucket_object = samples["music.ogg"]
    rt.store.put("inbox/v.ogg", io.BytesIO(bucket_object.read_bytes()))
    by_bucket = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_of_bucket_event("inbox/v.ogg", "v.ogg", bucket_object.stat().st_size),
    )

    for job_id, source in [
        (by_path, path),
        (by_staged, staged),
        (by_plan, planned),
        (by_upload, uploaded),
        (by_bucket, bucket_object),
    ]:
        _analysed(rt, job_id, source)
    assert not rt.store.exists("incoming/old-staged")  # the staged copies were deleted
    assert not rt.store.exists("incoming/u-old.1")
    assert rt.store.exists("inbox/v.ogg") and rt.store.exists("inbox/planned.flac")
    with rt.db.session() as s:
        assert s.get(UploadRow, "u-old").status == "completed"
        assert s.get(UploadRow, "u-old").asset_id == _sha(uploaded)
        # The plan made exactly its two renditions, as asked, and no package.
        made = {r.spec.spec_id: r for r in repo.list_renditions(s, _sha(planned))}
        assert repo.list_packages(s, _sha(planned)) == []
        # Defaults ran for a row without a plan: its rendition and its package.
        assert [r.status for r in repo.list_renditions(s, _sha(path))] == ["ready", "ready"]
        assert [p.status for p in repo.list_packages(s, _sha(path))] == ["ready"]
    assert {r.spec.format for r in made.values()} == {RenditionFormat.MP3, RenditionFormat.AAC}
    aac = next(r for r in made.values() if r.spec.format is RenditionFormat.AAC)
    channels, rate_hz, seconds = _decoded(rt, aac.storage_key)
    assert (channels, rate_hz) == (1, 44100) and abs(seconds - 4.0) < 0.1
    assert abs(aac.integrated_lufs - (-16.0)) < 1.0  # its loudness target held


def test_old_rows_in_the_middle_of_their_work_run(rt: Runtime, samples: dict[str, Path]) -> None:
    """An ingest that died after storing (its `stored` and stage seconds recorded, the
    staged copy left), a POST /v0/assets analysis, then an on-request transcode with
    its child and a package job, all as the old version wrote them."""
    died = samples["music.opus"]
    sha = _sha(died)
    blob, _ = rt.store.put_content_addressed("originals", io.BytesIO(died.read_bytes()))
    rt.store.put("incoming/died-copy", io.BytesIO(died.read_bytes()))
    resumed = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_stored_then_died(blob.key, "incoming/died-copy", sha, blob.size_bytes),
    )
    _analysed(rt, resumed, died)
    assert not rt.store.exists("incoming/died-copy")

    posted = samples["music.mp3"]
    blob, _ = rt.store.put_content_addressed("originals", io.BytesIO(posted.read_bytes()))
    with rt.db.session() as s:
        repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, posted.name)
    analysis = _run(
        rt,
        JobType.INGEST,
        JobStage.STORE,
        ingest_of_stored(blob.key, blob.sha256, posted.name, blob.size_bytes),
        asset_id=blob.sha256,
    )
    _analysed(rt, analysis, posted)

    spec = RenditionSpec(format=RenditionFormat.MP3, bitrate_bps=64000, channels=1)
    with rt.db.session() as s:
        parent = raw_job(
            s, JobType.TRANSCODE, JobStage.TRANSCODE, transcode_on_request(), asset_id=sha
        )
        rendition, created = repo.insert_rendition_if_absent(s, sha, spec, spec, [], parent.id)
        assert created
        child = raw_job(
            s,
            JobType.RENDITION,
            JobStage.TRANSCODE,
            rendition_child(rendition.id),
            asset_id=sha,
            parent_id=parent.id,
        )
    send_committed(rt, parent)
    done = wait_job(rt, parent.id, timeout_s=120)
    assert done.status == "succeeded" and done.result == {"renditions": 1}
    assert [c.status for c in done.children] == ["succeeded"] and done.children[0].id == child.id
    with rt.db.session() as s:
        made = repo.rendition_from_row(repo.get_rendition_row(s, sha, spec.spec_id))
    assert made.status == "ready"
    channels, _rate, seconds = _decoded(rt, made.storage_key)
    assert channels == 1 and abs(seconds - 3.0) < 0.1

    repackaged = _run(rt, JobType.PACKAGE, JobStage.PACKAGE, package_job(), asset_id=sha)
    job = wait_job(rt, repackaged, timeout_s=120)
    assert job.status == "succeeded" and job.result["packageId"]
    with rt.db.session() as s:
        package = repo.list_packages(s, sha)[0]
    with rt.store.open(package.master_key) as f:
        assert f.read().startswith(b"#EXTM3U")


def test_a_row_with_a_lying_header_limit_runs_and_invalid_params_keep_the_analysis(
    rt: Runtime, samples: dict[str, Path]
) -> None:
    """A row the old version wrote with a limit ≤ 0 (a header declaring a negative
    duration) runs, as with no limit; a row whose parameters do not validate reaching
    analysis fails with ModelInvalidError naming the field, and the analysis it ran is
    kept (not rolled back with the error, leaving the asset `analysing`)."""
    lying = samples["music.flac"]
    params = {**ingest_from_path(str(lying), lying.name, lying.stat().st_size), "timeLimitMs": -5}
    _analysed(rt, _run(rt, JobType.INGEST, JobStage.STORE, params), lying)

    broken = samples["speech.wav"]
    blob, _ = rt.store.put_content_addressed("originals", io.BytesIO(broken.read_bytes()))
    with rt.db.session() as s:
        repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, broken.name)
    bad = {**ingest_of_stored(blob.key, blob.sha256, broken.name, blob.size_bytes), "x": 1}
    job = wait_job(
        rt, _run(rt, JobType.INGEST, JobStage.ANALYSE, bad, asset_id=blob.sha256), timeout_s=120
    )
    assert job.status == "failed" and job.error.name == "ModelInvalidError"
    assert "x: Extra inputs are not permitted" in job.error.message
    with rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, blob.sha256))
    assert asset.status == "analysed" and asset.integrated_lufs is not None
