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
from mediamill.schemas.uploads import UploadStatus
from mediamill.storage.db import dialect_insert
from mediamill.storage.jobs_admin import cancel_job
from mediamill.storage.models import BucketEventRow, JobRow, UploadRow

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


# ---- bucket notifications -----------------------------------------------------------------


def find_bucket_event(
    session: Session, bucket: str, object_key: str, *versions: str
) -> BucketEventRow | None:
    """The row of an object version already acted on under any of `versions` (one
    version may have been recorded under an older spelling), if any: a cheap
    pre-check; the unique row in `record_bucket_event` is what decides."""
    stmt = (
        select(BucketEventRow)
        .where(
            BucketEventRow.bucket == bucket,
            BucketEventRow.object_key == object_key,
            BucketEventRow.version.in_(versions),
        )
        .order_by(BucketEventRow.created_at)
        .limit(1)
    )
    return session.scalars(stmt).first()


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
