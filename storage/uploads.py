"""Upload sessions and bucket notifications on the metadata DB.

State changes are conditional UPDATEs or INSERT ... ON CONFLICT DO NOTHING, so two
processes racing (two `complete` calls, a `complete` and a cancel, one notification
delivered twice) leave exactly one winner without any lock held across a request.
Every function takes an open `Session`; callers decide the transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ModelNotFoundError
from mediamill.schemas.jobs import JobStatus
from mediamill.schemas.uploads import TranscodeStatus, Upload, UploadStatus
from mediamill.storage import repo
from mediamill.storage.jobs_admin import cancel_job
from mediamill.storage.models import BucketEventRow, JobRow, LegacyTrackTokenRow, UploadRow
from mediamill.storage.repo import dialect_insert

# ---- upload sessions ----------------------------------------------------------------------


def create_upload(
    session: Session,
    *,
    upload_id: str,
    filename: str,
    content_type: str,
    size_bytes: int,
    asset_type: str | None,
    legacy_track_token: str | None,
    storage_key: str,
    upload_url_expires_at: datetime,
) -> UploadRow:
    """A new session, `awaiting_upload`."""
    now = utcnow()
    row = UploadRow(
        id=upload_id,
        status=UploadStatus.AWAITING_UPLOAD.value,
        filename=filename,
        content_type=content_type,
        size_bytes=size_bytes,
        asset_type=asset_type,
        legacy_track_token=legacy_track_token,
        storage_key=storage_key,
        upload_url_expires_at=upload_url_expires_at,
        created_at=now,
        modified_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_upload(session: Session, upload_id: str) -> UploadRow:
    row = session.get(UploadRow, upload_id)
    if row is None:
        raise ModelNotFoundError(f"Upload not found ({upload_id})", upload_id=upload_id)
    return row


def job_of(session: Session, row: UploadRow) -> JobRow | None:
    """The ingest job `complete` started, if any."""
    return session.get(JobRow, row.job_id) if row.job_id else None


def start_processing(session: Session, upload_id: str) -> bool:
    """`awaiting_upload` -> `processing`, for exactly one caller.

    Issue this first in the transaction that also makes the ingest job (then
    `attach_job`): on SQLite the UPDATE takes the write lock and so sees the latest
    committed status; on PostgreSQL the row lock makes a concurrent caller wait and
    then match nothing. Either way only one job is ever committed.
    """
    result = session.execute(
        update(UploadRow)
        .where(UploadRow.id == upload_id, UploadRow.status == UploadStatus.AWAITING_UPLOAD.value)
        .values(status=UploadStatus.PROCESSING.value, modified_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def attach_job(session: Session, upload_id: str, job_id: str) -> None:
    session.execute(
        update(UploadRow)
        .where(UploadRow.id == upload_id)
        .values(job_id=job_id)
        .execution_options(synchronize_session=False)
    )


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
        repo.add_event(session, "upload.completed", {"upload": upload.to_json_dict()})
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


def cancel_upload(session: Session, upload_id: str) -> bool:
    """`awaiting_upload` or `processing` -> `cancelled`, with its ingest job (queued or
    running: `jobs_admin.cancel_job`, whose worker then stops at its next write; the
    asset, if already stored, is kept). False when the session was in another state;
    ConflictError (roll back) when the job finished meanwhile."""
    result = session.execute(
        update(UploadRow)
        .where(
            UploadRow.id == upload_id,
            UploadRow.status.in_(
                [UploadStatus.AWAITING_UPLOAD.value, UploadStatus.PROCESSING.value]
            ),
        )
        .values(status=UploadStatus.CANCELLED.value, modified_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    job_id = session.scalar(select(UploadRow.job_id).where(UploadRow.id == upload_id))
    if job_id:
        cancel_job(session, job_id)
    return True


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


# ---- bucket notifications -----------------------------------------------------------------


def find_bucket_event(
    session: Session, bucket: str, object_key: str, version: str
) -> BucketEventRow | None:
    """The row of an object version already acted on, if any (a cheap pre-check; the
    unique row in `record_bucket_event` is what decides)."""
    stmt = select(BucketEventRow).where(
        BucketEventRow.bucket == bucket,
        BucketEventRow.object_key == object_key,
        BucketEventRow.version == version,
    )
    return session.scalars(stmt).one_or_none()


def record_bucket_event(session: Session, bucket: str, object_key: str, version: str) -> str | None:
    """Insert the (bucket, key, version) row unless it exists: the new row's id when
    this call is the first to see the object version, else None. Concurrent callers in
    any number of processes get exactly one id."""
    stmt = (
        dialect_insert(session)(BucketEventRow)
        .values(
            id=str(uuid.uuid4()),
            bucket=bucket,
            object_key=object_key,
            version=version,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["bucket", "object_key", "version"])
        .returning(BucketEventRow.id)
    )
    return session.execute(stmt).scalar_one_or_none()


def set_bucket_event_job(session: Session, event_id: str, job_id: str) -> None:
    session.execute(
        update(BucketEventRow)
        .where(BucketEventRow.id == event_id)
        .values(job_id=job_id)
        .execution_options(synchronize_session=False)
    )
