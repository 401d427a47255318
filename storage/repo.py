"""Reads and state transitions on the metadata DB, shared by workers, CLI and API.

Every function takes an open `Session` (one unit of work, see `Database.session`);
callers decide transaction boundaries so that a state change and its outbox event
commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.orm import Session, object_session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import MediaMillError, ModelNotFoundError
from mediamill.schemas.job_params import JobParams, check_params_type, parse_job_params
from mediamill.schemas.jobs import Job, JobError, JobStage, JobStatus, JobType
from mediamill.schemas.media import AnalysisResult, Asset, AssetStatus, Tracks, VideoInfo
from mediamill.schemas.packages import Package, PackageStatus
from mediamill.schemas.renditions import Rendition, RenditionSpec, RenditionStatus
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import (
    AssetRow,
    JobRow,
    LegacyTrackTokenRow,
    PackageRow,
    RenditionRow,
)
from mediamill.storage.outbox import add_event
from mediamill.storage.upload_state import settle_upload_of_job

ACTIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


# ---- assets -------------------------------------------------------------------------------


def insert_asset_if_absent(
    session: Session, asset_id: str, storage_key: str, size_bytes: int, filename: str | None
) -> bool:
    """Insert a `stored` asset unless it exists. True when this call created it.

    Uses INSERT ... ON CONFLICT DO NOTHING so concurrent ingests of the same
    bytes from many workers make exactly one row.
    """
    now = utcnow()
    values = {
        "id": asset_id,
        "storage_key": storage_key,
        "size_bytes": size_bytes,
        "original_filename": filename,
        "status": AssetStatus.STORED.value,
        "deleted": False,
        "created_at": now,
        "modified_at": now,
    }
    stmt = (
        dialect_insert(session)(AssetRow)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(AssetRow.id)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def get_asset_row(session: Session, asset_id: str, *, for_update: bool = False) -> AssetRow:
    stmt = select(AssetRow).where(AssetRow.id == asset_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise ModelNotFoundError(f"Original asset not found ({asset_id})", asset_id=asset_id)
    return row


def claim_asset_analysis(session: Session, asset_id: str, lease_s: float) -> bool:
    """Atomically mark an asset `analysing` for one job, or refuse.

    One conditional UPDATE (not read-then-write: SQLite ignores FOR UPDATE), so of
    any number of jobs holding the same bytes exactly one decodes them. An
    `analysing` asset whose heartbeat stopped (its worker died) may be taken over.
    """
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    result = session.execute(
        update(AssetRow)
        .where(
            AssetRow.id == asset_id,
            or_(
                AssetRow.status == AssetStatus.STORED.value,
                and_(AssetRow.status == AssetStatus.ANALYSING.value, AssetRow.modified_at < stale),
            ),
        )
        .values(status=AssetStatus.ANALYSING.value, modified_at=now)
    )
    return result.rowcount == 1


def record_analysis(row: AssetRow, result: AnalysisResult) -> None:
    """Copy an analysis result onto the asset row and mark it analysed."""
    media, loud = result.media, result.loudness
    row.asset_type = media.asset_type
    row.container = media.container
    row.codec = media.codec
    row.bitrate_bps = media.bitrate_bps
    row.channels = media.channels
    row.channel_layout = media.channel_layout
    row.sample_rate_hz = media.sample_rate_hz
    row.duration_ms = media.duration_ms
    row.video = media.video.model_dump() if media.video else None
    row.tracks = media.tracks.model_dump(mode="json") if media.tracks else None
    row.integrated_lufs = loud.integrated_lufs
    row.true_peak_dbtp = loud.true_peak_dbtp
    row.loudness_range_lu = loud.loudness_range_lu
    row.sample_peak_dbfs = loud.sample_peak_dbfs
    row.max_momentary_lufs = loud.max_momentary_lufs
    row.max_short_term_lufs = loud.max_short_term_lufs
    row.status = AssetStatus.ANALYSED.value
    row.error_name = row.error_message = None
    row.modified_at = utcnow()


def asset_from_row(session: Session, row: AssetRow) -> Asset:
    tokens = session.scalars(
        select(LegacyTrackTokenRow.token).where(LegacyTrackTokenRow.asset_id == row.id)
    ).all()
    return Asset(
        original_asset_id=row.id,
        asset_type=row.asset_type,
        size_bytes=row.size_bytes,
        container=row.container,
        codec=row.codec,
        bitrate_bps=row.bitrate_bps,
        channels=row.channels,
        channel_layout=row.channel_layout,
        sample_rate_hz=row.sample_rate_hz,
        duration_ms=row.duration_ms,
        integrated_lufs=row.integrated_lufs,
        true_peak_dbtp=row.true_peak_dbtp,
        loudness_range_lu=row.loudness_range_lu,
        sample_peak_dbfs=row.sample_peak_dbfs,
        max_momentary_lufs=row.max_momentary_lufs,
        max_short_term_lufs=row.max_short_term_lufs,
        video=VideoInfo.model_validate(row.video) if row.video else None,
        tracks=Tracks.model_validate(row.tracks) if row.tracks else None,
        status=AssetStatus(row.status),
        error={"name": row.error_name, "message": row.error_message or ""}
        if row.error_name
        else None,
        legacy_track_tokens=sorted(tokens),
        deleted=row.deleted,
        created=row.created_at,
        modified=row.modified_at,
    )


# ---- jobs ---------------------------------------------------------------------------------


def create_job(
    session: Session,
    job_type: JobType,
    stage: JobStage,
    params: JobParams,
    *,
    asset_id: str | None = None,
    parent_id: str | None = None,
) -> JobRow:
    """A new `queued` job row with `params` (the model of its type); the caller
    enqueues its message after commit."""
    check_params_type(job_type, params)
    now = utcnow()
    row = JobRow(
        id=str(uuid.uuid4()),
        type=job_type.value,
        stage=stage.value,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        attempts=0,
        params=params.to_row(),
        asset_id=asset_id,
        parent_id=parent_id,
        created_at=now,
        enqueued_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_job_row(session: Session, job_id: str, *, for_update: bool = False) -> JobRow:
    stmt = select(JobRow).where(JobRow.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise ModelNotFoundError(f"Job not found ({job_id})", job_id=job_id)
    return row


def claim_job(session: Session, job_id: str, stage: str, message_id: str, lease_s: float) -> bool:
    """Atomically mark a job `running` for one message, or refuse.

    A job is claimable in its current stage when it is queued, or running but
    orphaned (no heartbeat within the lease: its worker died). This makes a
    duplicate delivery of the same work a no-op instead of a second run.
    """
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.id == job_id,
            JobRow.stage == stage,
            or_(
                JobRow.status == JobStatus.QUEUED.value,
                and_(JobRow.status == JobStatus.RUNNING.value, JobRow.updated_at < stale),
            ),
        )
        .values(
            status=JobStatus.RUNNING.value,
            attempts=JobRow.attempts + 1,
            # Taking over a running job means its worker was lost (SQL reads the old
            # status on the right-hand side).
            lost_runs=JobRow.lost_runs
            + case((JobRow.status == JobStatus.RUNNING.value, 1), else_=0),
            message_id=message_id,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return False
    row = get_job_row(session, job_id)
    if row.started_at is None:
        row.started_at = now
    return True


def touch_jobs(session: Session, job_ids: list[str]) -> None:
    """Heartbeat: running jobs (and the assets they are analysing) were touched
    recently, so nobody else claims them."""
    if not job_ids:
        return
    now = utcnow()
    session.execute(
        update(JobRow)
        .where(JobRow.id.in_(job_ids), JobRow.status == JobStatus.RUNNING.value)
        .values(updated_at=now)
    )
    analysing = select(JobRow.asset_id).where(
        JobRow.id.in_(job_ids), JobRow.stage == JobStage.ANALYSE.value
    )
    session.execute(
        update(AssetRow)
        .where(AssetRow.id.in_(analysing), AssetRow.status == AssetStatus.ANALYSING.value)
        .values(modified_at=now)
    )


def set_progress(session: Session, job_id: str, progress: float) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(progress=max(0.0, min(1.0, progress)), updated_at=utcnow())
    )


def params_of(row: JobRow) -> JobParams:
    """The job's parameters, validated (ModelInvalidError when they are not valid)."""
    return parse_job_params(row.type, row.params)


def set_params(row: JobRow, params: JobParams) -> None:
    """Store `params` on the job (the model of its type). The stage seconds are the
    row's own bookkeeping (`_close_stage`): kept as the row has them, however old the
    model they come with."""
    check_params_type(JobType(row.type), params)
    data = params.to_row()
    data.pop("stageSeconds", None)
    if seconds := (row.params or {}).get("stageSeconds"):
        data["stageSeconds"] = seconds
    row.params = data


def _close_stage(row: JobRow, now: datetime) -> None:
    """Record how long the job spent in its current stage, from being queued for it
    to leaving it (`params.stageSeconds`, read by /metrics)."""
    began = row.enqueued_at or row.created_at
    if began is None or row.stage == JobStage.DONE.value:
        return
    seconds = dict((row.params or {}).get("stageSeconds", {}))
    seconds[row.stage] = round((now - began).total_seconds(), 3)
    row.params = {**(row.params or {}), "stageSeconds": seconds}


def advance_job(row: JobRow, stage: JobStage) -> None:
    """Move a job to its next stage, queued; the caller enqueues after commit.
    `attempts` counts tries of the current stage, so it starts again at zero."""
    now = utcnow()
    _close_stage(row, now)
    row.stage = stage.value
    row.status = JobStatus.QUEUED.value
    row.progress = 0.0
    row.attempts = row.lost_runs = 0
    row.enqueued_at = now
    row.updated_at = now
    row.message_id = None


def finish_job(row: JobRow, result: dict[str, Any] | None = None) -> None:
    now = utcnow()
    _close_stage(row, now)
    row.stage = JobStage.DONE.value
    row.status = JobStatus.SUCCEEDED.value
    row.progress = 1.0
    row.result = result
    row.error_name = row.error_message = None
    row.message_id = None
    row.finished_at = now
    row.updated_at = now
    session = object_session(row)
    if (
        session is not None
        and row.parent_id is None
        and row.asset_id
        and row.type in (JobType.INGEST.value, JobType.ANALYSE.value)
    ):
        # An ingest (or analysis) ran its course: the asset is analysed and its
        # renditions made, which is what `asset.ready` subscribers wait for.
        asset_row = session.get(AssetRow, row.asset_id)
        if asset_row is not None:
            asset = asset_from_row(session, asset_row)
            add_event(session, "asset.ready", {"asset": asset.to_json_dict()})
    job_ended(session, row)


def fail_job(session: Session, row: JobRow, error: MediaMillError) -> None:
    """Mark a job failed and write its `job.failed` event in the same transaction."""
    now = utcnow()
    row.status = JobStatus.FAILED.value
    row.error_name = error.name
    row.error_message = error.message
    row.message_id = None
    row.finished_at = now
    row.updated_at = now
    add_event(session, "job.failed", {"job": job_from_row(row).to_json_dict()})
    job_ended(session, row)


def job_ended(session: Session | None, row: JobRow) -> None:
    """A job just finished, failed or was cancelled, in `session`'s transaction: if it
    is the ingest job of an upload session, settle that session in the same
    transaction (its status, the legacy token, `upload.completed`), so nobody has
    to read the session for that to happen."""
    if session is None or row.parent_id is not None or not (row.params or {}).get("uploadId"):
        return
    settle_upload_of_job(session, row)


def fail_lost_job(session: Session, row: JobRow, error: MediaMillError) -> None:
    """Fail a job whose stage lost its worker too often. The asset it was analysing is
    not condemned but left `stored`: a lapsed lease does not prove the bytes killed the
    worker (a long database outage lapses leases too), and what crashes in native code
    is already caught, and condemned, by the native pool."""
    if row.stage == JobStage.ANALYSE.value and row.asset_id:
        asset = session.get(AssetRow, row.asset_id)
        if asset is not None and asset.status == AssetStatus.ANALYSING.value:
            asset.status = AssetStatus.STORED.value
            asset.modified_at = utcnow()
    fail_job(session, row, error)


def requeue_job(row: JobRow, error: MediaMillError | None = None) -> None:
    """Back to `queued` for a retry, keeping the last error for operators to see."""
    now = utcnow()
    row.status = JobStatus.QUEUED.value
    row.enqueued_at = now
    row.updated_at = now
    row.message_id = None
    if error is not None:
        row.error_name, row.error_message = error.name, error.message


def job_from_row(row: JobRow, children: list[Job] | None = None) -> Job:
    return Job(
        id=row.id,
        type=JobType(row.type),
        asset_id=row.asset_id,
        parent_id=row.parent_id,
        status=JobStatus(row.status),
        stage=JobStage(row.stage),
        progress=row.progress,
        attempts=row.attempts,
        error=JobError(name=row.error_name, message=row.error_message or "")
        if row.error_name
        else None,
        result=row.result,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        children=children or [],
    )


def load_job(session: Session, job_id: str) -> Job:
    """The Job resource with its children."""
    row = get_job_row(session, job_id)
    kids = session.scalars(
        select(JobRow).where(JobRow.parent_id == job_id).order_by(JobRow.created_at)
    ).all()
    return job_from_row(row, [job_from_row(k) for k in kids])


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    job_type: JobType | None = None,
    asset_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    include_children: bool = False,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id). Returns (jobs, next cursor).
    Children (one per rendition) are listed under their parent unless asked for."""
    stmt = select(JobRow)
    if not include_children:
        stmt = stmt.where(JobRow.parent_id.is_(None))
    if status is not None:
        stmt = stmt.where(JobRow.status == status.value)
    if job_type is not None:
        stmt = stmt.where(JobRow.type == job_type.value)
    if asset_id is not None:
        stmt = stmt.where(JobRow.asset_id == asset_id)
    anchor = session.get(JobRow, cursor) if cursor else None  # unknown: the first page
    page, next_cursor = keyset_page(session, stmt, JobRow, anchor, limit)
    return [job_from_row(r) for r in page], next_cursor


def keyset_page(
    session: Session, stmt: Select, model: Any, anchor: Any | None, limit: int, newest: bool = True
) -> tuple[list[Any], str | None]:
    """One page of `stmt` over `model` (a table with `created_at` and `id`), ordered on
    (created_at, id), newest or oldest first, after the `anchor` row when given: (rows,
    the id of the page's last row when more follow, else None)."""
    created, ident = model.created_at, model.id
    stmt = stmt.order_by(*((created.desc(), ident.desc()) if newest else (created, ident)))
    if anchor is not None:
        past = created < anchor.created_at if newest else created > anchor.created_at
        tie = ident < anchor.id if newest else ident > anchor.id
        stmt = stmt.where(or_(past, and_(created == anchor.created_at, tie)))
    rows = session.scalars(stmt.limit(limit + 1)).all()
    page = list(rows[:limit])
    return page, (page[-1].id if len(rows) > limit else None)


def requeue_if_unchanged(session: Session, row: JobRow) -> bool:
    """Back to `queued` only if nobody touched the row since it was read (compare and
    set on status and updated_at): a worker's fresh claim is never overwritten."""
    now = utcnow()
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.id == row.id,
            JobRow.status == row.status,
            JobRow.updated_at == row.updated_at,
        )
        .values(
            status=JobStatus.QUEUED.value,
            enqueued_at=now,
            updated_at=now,
            message_id=None,
            lost_runs=JobRow.lost_runs + (1 if row.status == JobStatus.RUNNING.value else 0),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_unsent(session: Session, row: JobRow) -> bool:
    """The job's message could not be sent (the broker was unreachable): clear
    `enqueued_at`, so the next sweep sends it instead of waiting `requeue_after_s`.
    Only if the row is still queued as it was when the send was tried (compare and
    set on stage and `enqueued_at`): a claim or a sweep since then is never undone."""
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.id == row.id,
            JobRow.status == JobStatus.QUEUED.value,
            JobRow.stage == row.stage,
            JobRow.enqueued_at == row.enqueued_at,
        )
        .values(enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def jobs_to_resweep(
    session: Session, *, queued_before: datetime, running_before: datetime, limit: int = 500
) -> list[JobRow]:
    """Jobs whose message may be lost: queued too long (or never sent: no `enqueued_at`),
    or running with no heartbeat."""
    stmt = (
        select(JobRow)
        .where(
            or_(
                and_(
                    JobRow.status == JobStatus.QUEUED.value,
                    or_(JobRow.enqueued_at.is_(None), JobRow.enqueued_at < queued_before),
                ),
                and_(JobRow.status == JobStatus.RUNNING.value, JobRow.updated_at < running_before),
            )
        )
        .order_by(JobRow.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt).all())


def job_metrics(session: Session, since: datetime) -> dict[str, dict]:
    """Jobs by (type, status), and (count, seconds) per stage of jobs finished since
    `since`: the numbers /metrics exposes."""
    counts = {
        (t, st): n
        for t, st, n in session.execute(
            select(JobRow.type, JobRow.status, func.count()).group_by(JobRow.type, JobRow.status)
        )
    }
    stages: dict[str, tuple[int, float]] = {}
    for (params,) in session.execute(
        select(JobRow.params).where(JobRow.finished_at >= since, JobRow.parent_id.is_(None))
    ):
        for stage, seconds in (params or {}).get("stageSeconds", {}).items():
            n, total = stages.get(stage, (0, 0.0))
            stages[stage] = (n + 1, total + float(seconds))
    return {"jobs": counts, "stageSeconds": stages}


# ---- renditions ---------------------------------------------------------------------------


def insert_rendition_if_absent(
    session: Session,
    asset_id: str,
    spec: RenditionSpec,
    requested: RenditionSpec,
    adjustments: list[str],
    job_id: str | None,
) -> tuple[RenditionRow, bool]:
    """The rendition row for (asset, spec), inserted `queued` and owned by `job_id`
    unless it exists. Returns (row, created). Concurrent callers in any number of
    processes see exactly one `created=True` (unique constraint + ON CONFLICT)."""
    now = utcnow()
    stmt = (
        dialect_insert(session)(RenditionRow)
        .values(
            id=str(uuid.uuid4()),
            asset_id=asset_id,
            spec_id=spec.spec_id,
            spec=spec.to_json_dict(),
            requested=requested.to_json_dict(),
            adjustments={"notes": adjustments},
            status=RenditionStatus.QUEUED.value,
            job_id=job_id,
            created_at=now,
            modified_at=now,
        )
        .on_conflict_do_nothing(index_elements=["asset_id", "spec_id"])
        .returning(RenditionRow.id)
    )
    created = session.execute(stmt).scalar_one_or_none() is not None
    return get_rendition_row(session, asset_id, spec.spec_id), created


def get_rendition_row(session: Session, asset_id: str, spec_id: str) -> RenditionRow:
    row = session.scalars(
        select(RenditionRow).where(
            RenditionRow.asset_id == asset_id, RenditionRow.spec_id == spec_id
        )
    ).one_or_none()
    if row is None:
        raise ModelNotFoundError(f"rendition {spec_id} of asset {asset_id} not found")
    return row


def renditions_of_job(session: Session, job_id: str) -> list[RenditionRow]:
    return list(
        session.scalars(
            select(RenditionRow)
            .where(RenditionRow.job_id == job_id)
            .order_by(RenditionRow.created_at)
        ).all()
    )


def record_rendition(
    row: RenditionRow,
    key: str,
    size_bytes: int,
    sha256: str,
    measured: AnalysisResult,
    *,
    notes: Sequence[str] = (),
) -> None:
    """Mark a rendition ready with what was stored and what was measured on it; `notes`
    (what the encode did to it: a limiter) join the adjustments resolving made."""
    media, loud = measured.media, measured.loudness
    if notes:
        kept = list((row.adjustments or {}).get("notes", []))
        row.adjustments = {"notes": [*kept, *(n for n in notes if n not in kept)]}
    row.status = RenditionStatus.READY.value
    row.storage_key, row.size_bytes, row.sha256 = key, size_bytes, sha256
    row.codec, row.bitrate_bps, row.channels = media.codec, media.bitrate_bps, media.channels
    row.sample_rate_hz, row.duration_ms = media.sample_rate_hz, media.duration_ms
    row.width = media.video.width if media.video else None
    row.height = media.video.height if media.video else None
    row.integrated_lufs, row.true_peak_dbtp = loud.integrated_lufs, loud.true_peak_dbtp
    row.error_name = row.error_message = None
    row.modified_at = utcnow()


def list_renditions(session: Session, asset_id: str) -> list[Rendition]:
    rows = session.scalars(
        select(RenditionRow)
        .where(RenditionRow.asset_id == asset_id)
        .order_by(RenditionRow.created_at, RenditionRow.spec_id)
    ).all()
    return [rendition_from_row(r) for r in rows]


def rendition_from_row(row: RenditionRow) -> Rendition:
    return Rendition(
        id=row.id,
        asset_id=row.asset_id,
        spec=RenditionSpec.model_validate(row.spec),
        requested=RenditionSpec.model_validate(row.requested),
        adjustments=list((row.adjustments or {}).get("notes", [])),
        status=RenditionStatus(row.status),
        storage_key=row.storage_key,
        codec=row.codec,
        bitrate_bps=row.bitrate_bps,
        channels=row.channels,
        sample_rate_hz=row.sample_rate_hz,
        duration_ms=row.duration_ms,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        integrated_lufs=row.integrated_lufs,
        true_peak_dbtp=row.true_peak_dbtp,
        error={"name": row.error_name, "message": row.error_message or ""}
        if row.error_name
        else None,
        created=row.created_at,
        modified=row.modified_at,
    )


# ---- packages -----------------------------------------------------------------------------


def upsert_package(
    session: Session,
    asset_id: str,
    package_id: str,
    spec_ids: list[str],
    segment_s: int,
    job_id: str | None,
) -> PackageRow:
    """The package row for (asset, package id), inserted `queued` unless it exists;
    an existing row is handed to `job_id` to be packaged again (in place)."""
    now = utcnow()
    stmt = (
        dialect_insert(session)(PackageRow)
        .values(
            id=str(uuid.uuid4()),
            asset_id=asset_id,
            package_id=package_id,
            renditions={"specIds": list(spec_ids)},
            segment_s=segment_s,
            status=PackageStatus.QUEUED.value,
            job_id=job_id,
            created_at=now,
            modified_at=now,
        )
        .on_conflict_do_nothing(index_elements=["asset_id", "package_id"])
    )
    session.execute(stmt)
    row = get_package_row(session, asset_id, package_id, for_update=True)
    row.job_id, row.modified_at = job_id, now
    return row


def get_package_row(
    session: Session, asset_id: str, package_id: str, *, for_update: bool = False
) -> PackageRow:
    stmt = select(PackageRow).where(
        PackageRow.asset_id == asset_id, PackageRow.package_id == package_id
    )
    row = session.scalars(stmt.with_for_update() if for_update else stmt).one_or_none()
    if row is None:
        raise ModelNotFoundError(f"package {package_id} of asset {asset_id} not found")
    return row


def list_packages(session: Session, asset_id: str) -> list[Package]:
    rows = session.scalars(
        select(PackageRow).where(PackageRow.asset_id == asset_id).order_by(PackageRow.created_at)
    ).all()
    return [package_from_row(r) for r in rows]


def package_from_row(row: PackageRow) -> Package:
    return Package(
        id=row.id,
        asset_id=row.asset_id,
        package_id=row.package_id,
        status=PackageStatus(row.status),
        renditions=list((row.renditions or {}).get("specIds", [])),
        segment_s=row.segment_s,
        duration_ms=row.duration_ms,
        segment_count=row.segment_count,
        size_bytes=row.size_bytes,
        master_key=row.master_key,
        manifest_key=row.manifest_key,
        error={"name": row.error_name, "message": row.error_message or ""}
        if row.error_name
        else None,
        created=row.created_at,
        modified=row.modified_at,
    )
