"""An upload session's state as its ingest job decides it, settled in the job's own
transaction (`repo.job_ended`) or by a read, and the Upload resource built from it.

Kept apart from `uploads` (the session's own writes) so that the job code below
both can settle a session without importing what cancels jobs.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.jobs import JobStatus
from mediamill.schemas.uploads import TranscodeStatus, Upload, UploadStatus
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import JobRow, LegacyTrackTokenRow, UploadRow
from mediamill.storage.outbox import add_event

# Session states that follow the ingest job (an operator may retry a failed job).
_FOLLOWS_JOB = (
    UploadStatus.PROCESSING.value,
    UploadStatus.COMPLETED.value,
    UploadStatus.FAILED.value,
)
_STATUS_OF_JOB = {
    JobStatus.QUEUED.value: UploadStatus.PROCESSING,
    JobStatus.RUNNING.value: UploadStatus.PROCESSING,
    JobStatus.SUCCEEDED.value: UploadStatus.COMPLETED,
    JobStatus.FAILED.value: UploadStatus.FAILED,
    JobStatus.CANCELLED.value: UploadStatus.CANCELLED,
}


def derived_status(row: UploadRow, job: JobRow | None) -> UploadStatus:
    """The session's status as of now: once `complete` made the job, the job's state
    decides (queued/running: processing; succeeded: completed; failed: failed)."""
    if row.status not in _FOLLOWS_JOB or job is None:
        return UploadStatus(row.status)
    return _STATUS_OF_JOB.get(job.status, UploadStatus.PROCESSING)


def settle_upload(session: Session, row: UploadRow, job: JobRow | None) -> UploadRow:
    """Bring the session row in line with its job (compare-and-set on the status, so
    concurrent writers settle it once), and on reaching `completed` map the session's
    legacy track token to the asset and write `upload.completed`. The worker does this
    in the transaction that ends the job (`settle_upload_of_job`); a read settles it
    too, for sessions whose job ended otherwise (an operator's cancel or retry)."""
    status = derived_status(row, job)
    if job is None or status.value == row.status:
        return row
    error_message = None
    if status is UploadStatus.FAILED:
        error_message = f"{job.error_name or 'Error'}: {job.error_message or ''}".rstrip(": ")
    elif status is UploadStatus.CANCELLED:
        error_message = "the ingest job was cancelled"
    result = session.execute(
        update(UploadRow)
        .where(UploadRow.id == row.id, UploadRow.status == row.status)
        .values(
            status=status.value,
            asset_id=job.asset_id,
            error_message=error_message,
            modified_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if result.rowcount == 1 and status is UploadStatus.COMPLETED:
        if row.legacy_track_token and job.asset_id:
            _map_legacy_token(session, row.legacy_track_token, job.asset_id)
        upload = upload_from_row(row, job)
        add_event(session, "upload.completed", {"upload": upload.to_json_dict()})
    return row


def settle_upload_of_job(session: Session, job: JobRow) -> None:
    """The ingest job of an upload (`params.uploadId`) ended in this transaction:
    settle its session here too (see `settle_upload`)."""
    row = session.get(UploadRow, (job.params or {}).get("uploadId"))
    if row is not None and row.job_id == job.id:
        settle_upload(session, row, job)


def _map_legacy_token(session: Session, token: str, asset_id: str) -> None:
    stmt = (
        dialect_insert(session)(LegacyTrackTokenRow)
        .values(token=token, asset_id=asset_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["token", "asset_id"])
    )
    session.execute(stmt)


def transcode_status(job: JobRow | None) -> TranscodeStatus:
    return TranscodeStatus(job.status) if job is not None else TranscodeStatus.PENDING


def upload_from_row(
    row: UploadRow,
    job: JobRow | None,
    *,
    upload_url: str | None = None,
    upload_headers: dict[str, str] | None = None,
) -> Upload:
    """The Upload resource; the URL is the caller's (it depends on the store)."""
    asset_id = row.asset_id or (job.asset_id if job is not None else None)
    return Upload(
        id=row.id,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        asset_type=row.asset_type,
        legacy_track_token=row.legacy_track_token,
        status=derived_status(row, job),
        transcode_status=transcode_status(job),
        upload_url=upload_url,
        upload_headers=upload_headers or {},
        upload_url_expires_at=row.upload_url_expires_at,
        job_id=row.job_id,
        asset_id=asset_id,
        error_message=row.error_message,
        created_at=row.created_at,
        updated_at=row.modified_at,
    )
