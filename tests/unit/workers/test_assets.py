"""The asset use cases (workers/assets.py) on SQLite, a local store and a stub broker:
an original is recorded once with its `asset.created` event, its analysis is started
once however many ask, the original or a ready rendition is delivered as a signed URL
(a missing rendition requested once and reported not ready with a retry time), and a
stream request starts at most once what will give the asset a package."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from mediamill.config.settings import Settings
from mediamill.pipeline.signing import NginxSigner
from mediamill.schemas import keys
from mediamill.schemas.api import RenditionQuery
from mediamill.schemas.errors import (
    InvalidRequestError,
    ModelInvalidError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from mediamill.schemas.job_params import StoredSource
from mediamill.schemas.media import AssetStatus
from mediamill.schemas.packages import PackageStatus
from mediamill.schemas.renditions import RenditionFormat, RenditionStatus
from mediamill.storage import outbox, repo
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow, RenditionRow
from mediamill.workers import assets
from mediamill.workers.packages import package_ladder
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

SECRET = "a-signing-secret-of-some-length"
CDN = "https://cdn.example.test"
MP3 = RenditionQuery(bitrate=128000, channels=2, format=RenditionFormat.MP3)


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Iterator[Runtime]:
    broker = StubBroker()
    broker.declare_queue(QUEUE_NAME)
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", signing_secret=SECRET, cdn_base_url=CDN
    )
    yield Runtime(settings, db, LocalBlobStore(tmp_path / "store"), broker)
    broker.close()


def _recorded(rt: Runtime, data: bytes, **fields: object) -> str:
    """Store and record `data` (no job), its row then given `fields`; its asset id."""
    blob, _ = rt.store.put_content_addressed(keys.ORIGINALS, io.BytesIO(data))
    with rt.db.session() as s:
        row = assets.record_original(s, blob, "take.flac")
        for name, value in fields.items():
            setattr(row, name, value)
        return row.id


def _analysed(rt: Runtime, data: bytes, duration_ms: int = 60_000) -> str:
    return _recorded(
        rt,
        data,
        status=AssetStatus.ANALYSED.value,
        asset_type="audio",
        codec="flac",
        channels=2,
        sample_rate_hz=48000,
        duration_ms=duration_ms,
    )


def _jobs(rt: Runtime) -> list[tuple[str, str | None]]:
    with rt.db.session() as s:
        rows = s.scalars(select(JobRow).where(JobRow.parent_id.is_(None))).all()
        return sorted((r.type, r.asset_id) for r in rows)


def _sent(rt: Runtime) -> list[tuple[str, tuple]]:
    return [(m.actor_name, m.args) for m in map(Message.decode, rt.broker.queues[QUEUE_NAME].queue)]


def _set_renditions(rt: Runtime, asset_id: str, status: RenditionStatus) -> list[str]:
    """Mark every rendition of the asset `status` (ready ones with a stored key)."""
    with rt.db.session() as s:
        rows = s.scalars(select(RenditionRow).where(RenditionRow.asset_id == asset_id)).all()
        for row in rows:
            row.status = status.value
            if status is RenditionStatus.READY:
                row.storage_key = keys.rendition_key(asset_id, row.spec_id, "bin")
            else:
                row.error_name, row.error_message = "CorruptMediaError", "truncated"
        return sorted(r.spec_id for r in rows)


def _signed_key(url: str) -> str:
    """The key a signed nginx URL names, once its token is checked."""
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    query = parse_qs(parts.query)
    assert NginxSigner(CDN, SECRET).verify_file(key, query["md5"][0], int(query["expires"][0]))
    return key


def test_record_original_inserts_once_with_its_created_event(rt: Runtime) -> None:
    """The first record inserts the row and one `asset.created` naming its token; later
    records of the same bytes return that row, link their token, and write no event."""
    blob, _ = rt.store.put_content_addressed(keys.ORIGINALS, io.BytesIO(b"master bytes"))
    with rt.db.session() as s:
        first = assets.record_original(s, blob, "x" * 600, asset_type="audio/flac", token="T1")
        assert (first.id, first.storage_key) == (blob.sha256, keys.original_key(blob.sha256))
        assert (first.original_filename, first.asset_type) == ("x" * 512, "audio/flac")
    with rt.db.session() as s:
        again = assets.record_original(s, blob, "other.wav", asset_type="video", token="T2")
        assert (again.id, again.original_filename, again.asset_type) == (
            blob.sha256,
            "x" * 512,
            "audio/flac",
        )
    with rt.db.session() as s:
        events = [e.data["asset"] for e in outbox.list_events(s, "asset.created")]
    assert len(events) == 1
    assert events[0]["originalAssetId"] == blob.sha256
    assert (events[0]["legacyTrackTokens"], events[0]["status"]) == (["T1"], "stored")
    assert assets.read_asset(rt, blob.sha256).legacy_track_tokens == ["T1", "T2"]


def test_store_and_record_starts_one_analysis_and_refuses_a_wrong_length(rt: Runtime) -> None:
    """Stored under the SHA-256, one ingest of the stored bytes is sent; the same bytes
    again reuse it. A length other than declared is refused and records nothing."""
    data = b"fLaC" + bytes(1000)
    sha = hashlib.sha256(data).hexdigest()
    asset, job_id = assets.store_and_record(rt, io.BytesIO(data), "a.flac", "audio", 1004, "T9")
    assert (asset.original_asset_id, asset.size_bytes, asset.status) == (
        sha,
        1004,
        AssetStatus.STORED,
    )
    assert (asset.asset_type, asset.legacy_track_tokens) == ("audio", ["T9"])
    with rt.store.open(keys.original_key(sha)) as f:
        assert f.read() == data
    with rt.db.session() as s:
        job = repo.get_job_row(s, job_id)
        params = repo.params_of(job)
        assert (job.type, job.stage, job.asset_id) == ("ingest", "store", sha)
    assert params.source == StoredSource(key=keys.original_key(sha), sha256=sha)
    assert (params.filename, params.size_bytes, params.time_limit_ms) == ("a.flac", 1004, 300_000)
    _, same = assets.store_and_record(rt, io.BytesIO(data), "b.flac", None, None, None)
    assert same == job_id and _sent(rt) == [("ingest", (job_id,))]

    other = b"different bytes"
    with pytest.raises(InvalidRequestError) as e:
        assets.store_and_record(rt, io.BytesIO(other), "c.flac", None, 16, None)
    assert e.value.message == "assetLength says 16 bytes but 15 bytes were received"
    assert e.value.context == {"declared": 16, "received": 15}
    with pytest.raises(ModelNotFoundError):
        assets.read_asset(rt, hashlib.sha256(other).hexdigest())
    assert _jobs(rt) == [("ingest", sha)]


def test_ensure_analysis_starts_a_job_once_for_an_asset_left_stored(rt: Runtime) -> None:
    """No job under way: one is created and sent; asked again, the same; none once analysed."""
    asset_id = _recorded(rt, b"cancelled upload")
    job_id = assets.ensure_analysis(rt, asset_id)
    assert job_id is not None and assets.ensure_analysis(rt, asset_id) == job_id
    assert _sent(rt) == [("ingest", (job_id,))]
    with rt.db.session() as s:
        assert repo.params_of(repo.get_job_row(s, job_id)).filename == "take.flac"
        repo.get_job_row(s, job_id).status = "cancelled"
    retried = assets.ensure_analysis(rt, asset_id)
    assert retried not in (None, job_id)
    assert assets.ensure_analysis(rt, _analysed(rt, b"done")) is None
    with pytest.raises(ModelNotFoundError, match=r"\(f{64}\)"):
        assets.ensure_analysis(rt, "f" * 64)


def test_asset_metadata_folds_the_id_and_hides_what_is_not_an_asset(rt: Runtime) -> None:
    """Any case of a SHA-256 finds the asset with its renditions and packages; an id that
    is not a SHA-256, an unknown one and a deleted asset are not found."""
    asset_id = _analysed(rt, b"described")
    with pytest.raises(ModelNotReadyError):
        assets.deliver(rt, asset_id, MP3)  # requests the rendition
    with rt.db.session() as s:
        repo.upsert_package(s, asset_id, "pkg-0123456789abcdef", ["aac-64000-2ch"], 4, None)
    with rt.db.session() as s:
        meta = assets.asset_metadata(s, asset_id.upper())
    assert (meta.original_asset_id, meta.status, meta.duration_ms) == (
        asset_id,
        AssetStatus.ANALYSED,
        60_000,
    )
    assert [(r.spec.spec_id, r.status) for r in meta.renditions] == [
        ("mp3-128000-2ch-48000hz", RenditionStatus.QUEUED)
    ]
    assert [(p.package_id, p.status) for p in meta.packages] == [
        ("pkg-0123456789abcdef", PackageStatus.QUEUED)
    ]
    deleted = _recorded(rt, b"gone", deleted=True)
    for wrong in ("not-a-sha", "0" * 64, deleted):
        with rt.db.session() as s, pytest.raises(ModelNotFoundError, match="not found"):
            assets.asset_metadata(s, wrong)
    with pytest.raises(ModelNotFoundError, match=r"^Original asset not found \(not-a-sha\)$"):
        assets.deliver(rt, "not-a-sha", RenditionQuery())


def test_deliver_signs_the_original_or_the_rendition_once_it_is_ready(rt: Runtime) -> None:
    """No format: the original's URL. A format: requested once (one transcode job), not
    ready with a retry time of duration / 20 (2 to 60 s), then the rendition's URL."""
    durations = [None, 0, -5_000, 10_000, 100_000, 1_000_001, 1_200_000, 36_000_000]
    assert [assets.retry_after_s(d) for d in durations] == [2, 2, 2, 2, 5, 51, 60, 60]
    asset_id = _analysed(rt, b"delivered", duration_ms=100_000)
    assert _signed_key(assets.deliver(rt, asset_id, RenditionQuery()).url) == (
        keys.original_key(asset_id)
    )
    for _ in range(2):
        with pytest.raises(ModelNotReadyError, match="in requested format is not ready") as e:
            assets.deliver(rt, asset_id, MP3)
        assert e.value.context == {"retry_after_s": 5}
    assert _jobs(rt) == [("transcode", asset_id)]
    assert [actor for actor, _ in _sent(rt)] == ["transcode"]
    (spec_id,) = _set_renditions(rt, asset_id, RenditionStatus.READY)
    assert _signed_key(assets.deliver(rt, asset_id, MP3).url) == keys.rendition_key(
        asset_id, spec_id, "bin"
    )


def test_deliver_a_rendition_that_cannot_be_served_yet_or_ever(rt: Runtime) -> None:
    """Not analysed: not ready, its analysis started. Analysis failed, or the rendition
    failed: ModelInvalidError with the reason; the original is still delivered."""
    stored = _recorded(rt, b"never analysed")
    with pytest.raises(ModelNotReadyError, match=f"asset {stored} is not analysed yet") as e:
        assets.deliver(rt, stored, MP3)
    assert e.value.context == {"retry_after_s": 2}
    assert _jobs(rt) == [("ingest", stored)]

    failed = _recorded(
        rt, b"corrupt", status="failed", error_name="CorruptMediaError", error_message="truncated"
    )
    with pytest.raises(ModelInvalidError) as f:
        assets.deliver(rt, failed, MP3)
    assert f.value.message == (
        f"asset {failed} cannot be transcoded: its analysis failed (CorruptMediaError: truncated)"
    )
    assert _signed_key(assets.deliver(rt, failed, RenditionQuery()).url) == (
        keys.original_key(failed)
    )

    asset_id = _analysed(rt, b"fails to encode")
    with pytest.raises(ModelNotReadyError):
        assets.deliver(rt, asset_id, MP3)
    _set_renditions(rt, asset_id, RenditionStatus.FAILED)
    with pytest.raises(ModelInvalidError, match=r"could not be made \(CorruptMediaError: trunc"):
        assets.deliver(rt, asset_id, MP3)


def test_ready_package_starts_the_ladder_then_one_package_job_then_serves_it(
    rt: Runtime,
) -> None:
    """No package: the ladder's renditions are requested once, then one package job is
    started; the newest ready package is served once there is one."""
    asset_id = _analysed(rt, b"streamed", duration_ms=200_000)
    ladder = sorted(s.spec_id for s in package_ladder(rt.settings, assets.read_asset(rt, asset_id)))
    for _ in range(2):
        with pytest.raises(ModelNotReadyError, match="has no stream ready yet") as e:
            assets.ready_package(rt, asset_id)
        assert e.value.context == {"retry_after_s": 10}
    assert _jobs(rt) == [("transcode", asset_id)] * len(ladder)
    assert _set_renditions(rt, asset_id, RenditionStatus.READY) == ladder
    for _ in range(2):
        with pytest.raises(ModelNotReadyError, match="has no stream ready yet"):
            assets.ready_package(rt, asset_id)
    assert _jobs(rt).count(("package", asset_id)) == 1
    assert [a for a, _ in _sent(rt)] == ["transcode"] * len(ladder) + ["package"]

    with rt.db.session() as s:
        for package_id, age_s in (("pkg-old", 60), ("pkg-new", 0), ("pkg-queued", -60)):
            row = repo.upsert_package(s, asset_id, package_id, ladder, 4, None)
            row.status = PackageStatus.QUEUED.value if age_s < 0 else PackageStatus.READY.value
            row.modified_at -= timedelta(seconds=age_s)
    asset, package = assets.ready_package(rt, asset_id)
    assert (asset.original_asset_id, package.package_id) == (asset_id, "pkg-new")


def test_packaging_refuses_what_can_never_be_packaged(rt: Runtime) -> None:
    """A failed analysis, no audio to package, a failed package, every rung failed:
    ModelInvalidError saying which; nothing is started for any of them."""
    failed = _recorded(rt, b"corrupt", status="failed", error_name="E", error_message="m")
    with pytest.raises(ModelInvalidError, match="cannot be packaged: its analysis failed"):
        assets.ready_package(rt, failed)
    silent = _recorded(rt, b"no audio", status="analysed", channels=None, sample_rate_hz=None)
    with pytest.raises(ModelInvalidError, match=f"{silent} has no renditions that can be"):
        assets.ready_package(rt, silent)

    broken = _analysed(rt, b"packager fails")
    with rt.db.session() as s:
        row = repo.upsert_package(s, broken, "pkg-0123456789abcdef", [], 4, None)
        row.status = PackageStatus.FAILED.value
        row.error_name, row.error_message = "PackagingError", "no segments"
    with pytest.raises(ModelInvalidError, match=r"could not be packaged \(PackagingError: no seg"):
        assets.ready_package(rt, broken)
    assert _jobs(rt) == []

    rungs_fail = _analysed(rt, b"every rung fails")
    with pytest.raises(ModelNotReadyError):
        assets.ready_package(rt, rungs_fail)
    _set_renditions(rt, rungs_fail, RenditionStatus.FAILED)
    with pytest.raises(ModelInvalidError, match="has no renditions that can be packaged"):
        assets.ready_package(rt, rungs_fail)
    assert ("package", rungs_fail) not in _jobs(rt)


def test_package_rungs_keep_what_resolving_the_ladder_changed(rt: Runtime) -> None:
    """A mono original: each stereo rung of the AAC ladder is resolved once, and the
    rendition records the rung as asked and why it became mono, as ingest records it
    (requesting the already-effective spec again used to record no change at all)."""
    mono = _recorded(
        rt,
        b"mono master",
        status=AssetStatus.ANALYSED.value,
        asset_type="audio",
        codec="flac",
        channels=1,
        sample_rate_hz=48000,
        duration_ms=60_000,
    )
    with pytest.raises(ModelNotReadyError):
        assets.ready_package(rt, mono)
    with rt.db.session() as s:
        made = repo.list_renditions(s, mono)
    assert sorted(r.spec.bitrate_bps for r in made) == [64000, 128000]  # 256k: not in mono
    for rendition in made:
        assert (rendition.requested.channels, rendition.spec.channels) == (2, 1)
        assert any("channels 2 -> 1" in note for note in rendition.adjustments)
