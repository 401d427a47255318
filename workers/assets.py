"""The asset use cases: record an original, start or reuse its analysis, deliver the
original or a rendition, start packaging, read what a client may see.

The routes, the CLI and the actors call these; none of them inserts an asset or
writes `asset.created` by itself (`record_original` is the one place). Work that
is missing is started exactly once however many callers ask: the asset's row lock
(`lock_asset`) and the unique rendition and package rows decide.
"""

from __future__ import annotations

import math
from typing import BinaryIO

from sqlalchemy.orm import Session

from mediamill.schemas import keys
from mediamill.schemas.api import AssetMetadata, RenditionQuery, asset_id_or_none
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    InvalidRequestError,
    ModelInvalidError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from mediamill.schemas.job_params import IngestParams, StoredSource
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.media import Asset, AssetStatus
from mediamill.schemas.packages import Package, PackageStatus
from mediamill.schemas.renditions import AUDIO_BITRATES_BPS, RenditionStatus
from mediamill.storage import outbox, repo
from mediamill.storage.asset_jobs import active_jobs, lock_asset
from mediamill.storage.blobs import StoredBlob
from mediamill.storage.legacy import link_track_token
from mediamill.storage.models import AssetRow, JobRow
from mediamill.workers.delivery import SignedUrl, sign_file_url
from mediamill.workers.packages import enqueue_package, planned_ladder
from mediamill.workers.queue import send_committed, time_limit_ms
from mediamill.workers.renditions import request_planned, request_rendition
from mediamill.workers.runtime import Runtime

# Retry-After for work in progress: the benchmarks (docs/performance.md) transcode and package
# at 20x real time or better on two cores; never below or above these bounds.
REALTIME_FACTOR = 20.0
MIN_RETRY_AFTER_S = 2
MAX_RETRY_AFTER_S = 60
MAX_FILENAME_CHARS = 512


def retry_after_s(duration_ms: int | None) -> int:
    """Seconds a client should wait before asking again for work on media this long."""
    estimate = math.ceil((duration_ms or 0) / 1000 / REALTIME_FACTOR)
    return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, estimate))


# ---- recording originals ------------------------------------------------------------------


def record_original(
    s: Session,
    blob: StoredBlob,
    filename: str | None,
    *,
    asset_type: str | None = None,
    token: str | None = None,
    lock: bool = False,
) -> AssetRow:
    """The asset of stored bytes, inserted (with its `asset.created` event, in the same
    transaction) unless these bytes were recorded before: the one place either is
    written. `asset_type` is what the uploader declared (analysis replaces it with
    the measured type); `token` a legacy track token to link to it (before the event,
    which names it); `lock` holds the asset's lock (`lock_asset`) before it is read."""
    name = filename[:MAX_FILENAME_CHARS] if filename else None
    created = repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, name)
    if lock:
        lock_asset(s, blob.sha256)
    row = repo.get_asset_row(s, blob.sha256)
    if row.deleted:  # deleted, and the same bytes are here again: live again, from scratch
        lock_asset(s, row.id)  # after a deletion under way has taken its files
        s.refresh(row)
    if row.deleted:
        row.deleted, row.status = False, AssetStatus.STORED.value
        row.storage_key, row.size_bytes = blob.key, blob.size_bytes
        row.error_name = row.error_message = None
        row.modified_at = utcnow()
        created = True
    if created and asset_type:
        row.asset_type = asset_type
    if token is not None:
        link_track_token(s, token, row.id)
    if created:
        outbox.add_event(s, "asset.created", {"asset": repo.asset_from_row(s, row).to_json_dict()})
    return row


def length_mismatch(declared: int, received: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"assetLength says {declared} bytes but {received} bytes were received",
        declared=declared,
        received=received,
    )


def store_and_record(
    rt: Runtime,
    stream: BinaryIO,
    filename: str | None,
    declared_type: str | None,
    declared_length: int | None,
    token: str | None,
) -> tuple[Asset, str | None]:
    """Store the bytes under their SHA-256 (hashed while written), record the asset,
    link the token, and start its analysis unless it is done or under way. Returns
    the asset and the id of the job analysing it (None once analysed or failed)."""
    blob, _stored_now = rt.store.put_content_addressed(keys.ORIGINALS, stream)
    if declared_length is not None and blob.size_bytes != declared_length:
        # The bytes stay: content-addressed, they may be a concurrent ingest's of the same
        # bytes whose asset row is not written yet. Unrecorded, they are only reused.
        raise length_mismatch(declared_length, blob.size_bytes)
    with rt.db.session() as s:
        row = record_original(s, blob, filename, asset_type=declared_type, token=token, lock=True)
        job_id, send = _start_analysis(rt, s, row, filename)
        asset = repo.asset_from_row(s, row)
    if send is not None:
        send_committed(rt, send)
    return asset, job_id


# ---- analysis -----------------------------------------------------------------------------


def _start_analysis(
    rt: Runtime, s: Session, row: AssetRow, filename: str | None
) -> tuple[str | None, JobRow | None]:
    """With the asset's lock held (lock_asset): the job analysing it, created unless one
    is under way. Returns (its id, the new job to send after commit, else None); (None,
    None) once it is analysed or failed. An ingest of the stored bytes: no second copy."""
    if row.status in (AssetStatus.ANALYSED.value, AssetStatus.FAILED.value):
        return None, None
    running = active_jobs(s, row.id, (JobType.INGEST, JobType.ANALYSE))
    if running:
        return running[0].id, None
    params = IngestParams(
        source=StoredSource(key=row.storage_key, sha256=row.id),
        filename=filename,
        size_bytes=row.size_bytes,
        time_limit_ms=time_limit_ms(rt.settings, None),
    )
    job = repo.create_job(s, JobType.INGEST, JobStage.STORE, params, asset_id=row.id)
    return job.id, job


def ensure_analysis(rt: Runtime, asset_id: str) -> str | None:
    """See an asset not analysed yet is on its way: start its analysis unless a job is
    under way. An asset can stay `stored` with none (its ingest was cancelled after the
    bytes were stored); a 409 ModelNotReadyError must then still lead somewhere. Once
    per asset however many ask (the asset's lock decides). The analysing job's id."""
    with rt.db.session() as s:
        lock_asset(s, asset_id)
        row = repo.get_asset_row(s, asset_id)
        job_id, send = _start_analysis(rt, s, row, row.original_filename)
    if send is not None:
        send_committed(rt, send)
    return job_id


# ---- reading ------------------------------------------------------------------------------


def load_asset_row(session: Session, asset_id: str) -> AssetRow:
    """The asset, or ModelNotFoundError (also for ids that cannot be a SHA-256, and for
    deleted assets)."""
    folded = asset_id_or_none(asset_id)
    if folded is None:
        raise ModelNotFoundError(f"Original asset not found ({asset_id})", asset_id=asset_id)
    row = repo.get_asset_row(session, folded)
    if row.deleted:
        raise ModelNotFoundError(f"Original asset not found ({asset_id})", asset_id=asset_id)
    return row


def read_asset(rt: Runtime, asset_id: str) -> Asset:
    with rt.db.session() as s:
        return repo.asset_from_row(s, repo.get_asset_row(s, asset_id))


def asset_metadata(s: Session, asset_id: str) -> AssetMetadata:
    """The Asset with its renditions and packages."""
    row = load_asset_row(s, asset_id)
    asset = repo.asset_from_row(s, row)
    return AssetMetadata(
        **asset.model_dump(),
        renditions=repo.list_renditions(s, row.id),
        packages=repo.list_packages(s, row.id),
    )


# ---- delivery -----------------------------------------------------------------------------


def deliver(rt: Runtime, asset_id: str, query: RenditionQuery) -> SignedUrl:
    """A signed URL for the original (no rendition asked for) or for the rendition asked
    for once it is ready. A missing rendition is requested exactly once (however many
    callers) and reported not ready."""
    with rt.db.session() as s:
        row = load_asset_row(s, asset_id)
        asset_id, status, duration_ms = row.id, row.status, row.duration_ms
        key, error = row.storage_key, (row.error_name, row.error_message)
    spec = query.spec()
    if spec is None:
        return sign_file_url(rt, key, asset_id)
    if status == AssetStatus.FAILED.value:
        raise ModelInvalidError(
            f"asset {asset_id} cannot be transcoded: its analysis failed ({error[0]}: {error[1]})"
        )
    wait_s = retry_after_s(duration_ms)
    try:
        # The Content Automation API offers seven bitrates; a copy is capped to them.
        rendition = request_rendition(
            rt, asset_id, spec, exact=query.exact, offered=AUDIO_BITRATES_BPS
        )
    except ModelNotReadyError as exc:  # the original is not analysed yet: see it is coming
        ensure_analysis(rt, asset_id)
        raise ModelNotReadyError(exc.message, retry_after_s=wait_s) from exc
    if rendition.status is RenditionStatus.READY and rendition.storage_key:
        return sign_file_url(rt, rendition.storage_key, asset_id)
    if rendition.status is RenditionStatus.FAILED:
        reason = rendition.error or {}
        raise ModelInvalidError(
            f"asset {asset_id} in requested format could not be made "
            f"({reason.get('name')}: {reason.get('message')})"
        )
    raise ModelNotReadyError(
        f"asset {asset_id} in requested format is not ready", retry_after_s=wait_s
    )


# ---- packaging ----------------------------------------------------------------------------


def _newest(packages: list[Package], status: PackageStatus) -> Package | None:
    chosen = [p for p in packages if p.status is status]
    return max(chosen, key=lambda p: (p.modified or p.created, p.id)) if chosen else None


def ready_package(rt: Runtime, asset_id: str) -> tuple[Asset, Package]:
    """The asset's newest ready package. Without one: ModelNotReadyError with a retry
    time, after starting (at most once) what will make one; ModelInvalidError when
    nothing can."""
    with rt.db.session() as s:
        row = load_asset_row(s, asset_id)
        asset = repo.asset_from_row(s, row)
        packages = repo.list_packages(s, row.id)
    ready = _newest(packages, PackageStatus.READY)
    if ready is None:
        start_packaging(rt, asset, packages)
        raise ModelNotReadyError(
            f"asset {asset.original_asset_id} has no stream ready yet",
            retry_after_s=retry_after_s(asset.duration_ms),
        )
    return asset, ready


def start_packaging(rt: Runtime, asset: Asset, packages: list[Package]) -> None:
    """Start, at most once, what will give the asset a package; raise what stands in the
    way for good. An asset not analysed yet gets its analysis started unless under way
    (the ingest packages at its end). Nothing starts while the upload's own job (which
    packages at its end) or a package job is under way. Otherwise the package's
    renditions are requested (each exactly once, see request_rendition) and, once none
    is still being made, one package job is started."""
    asset_id = asset.original_asset_id
    if asset.status is AssetStatus.FAILED:
        raise ModelInvalidError(f"asset {asset_id} cannot be packaged: its analysis failed")
    if asset.status is not AssetStatus.ANALYSED:
        ensure_analysis(rt, asset_id)  # its ingest packages at its end
        raise ModelNotReadyError(
            f"asset {asset_id} is not analysed yet; it is packaged after",
            retry_after_s=retry_after_s(asset.duration_ms),
        )
    ladder = planned_ladder(rt.settings, asset)
    if not ladder:
        raise ModelInvalidError(f"asset {asset_id} has no renditions that can be packaged")
    with rt.db.session() as s:
        if active_jobs(s, asset_id, (JobType.INGEST, JobType.PACKAGE)):
            return
    failed = _newest(packages, PackageStatus.FAILED)
    if failed is not None:  # a permanent failure: packaging again would fail the same way
        reason = failed.error or {}
        raise ModelInvalidError(
            f"asset {asset_id} could not be packaged "
            f"({reason.get('name')}: {reason.get('message')})"
        )
    rungs = [request_planned(rt, asset_id, rung) for rung in ladder]
    if any(r.status in (RenditionStatus.QUEUED, RenditionStatus.RUNNING) for r in rungs):
        return
    if not any(r.status is RenditionStatus.READY for r in rungs):
        raise ModelInvalidError(f"asset {asset_id} has no renditions that can be packaged")
    enqueue_package(rt, asset_id, unless_active=True)
