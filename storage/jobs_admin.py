"""Operator actions on jobs: cancel, retry, and listing with checked filters.

Cancel and retry are conditional writes on the job row, so they cannot race a
worker into an impossible state: a worker only moves a job on while it still
owns it (`workers/middleware.owned_job`: running, under its own message), a
cancelled job is never claimed (`repo.claim_job` takes queued or stale running
jobs only) and never re-sent (`repo.jobs_to_resweep` looks at the same two states).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    ConflictError,
    InvalidRequestError,
    ModelInvalidError,
    ModelNotFoundError,
)
from mediamill.schemas.job_params import IngestParams, RenditionJobParams
from mediamill.schemas.jobs import Job, JobStage, JobStatus, JobType
from mediamill.schemas.media import AssetStatus
from mediamill.schemas.packages import PackageStatus
from mediamill.schemas.renditions import RenditionStatus
from mediamill.storage import repo
from mediamill.storage.db import Database
from mediamill.storage.models import AssetRow, JobRow, PackageRow, RenditionRow

MAX_PAGE_SIZE = 200
_UNFINISHED_RENDITIONS = (RenditionStatus.QUEUED.value, RenditionStatus.RUNNING.value)
_UNFINISHED_PACKAGES = (PackageStatus.QUEUED.value, PackageStatus.RUNNING.value)
CANCELLED_ERROR_NAME = "JobCancelledError"


_READ_SESSIONS: dict[Database, sessionmaker[Session]] = {}


@contextmanager
def read_session(db: Database) -> Iterator[Session]:
    """A session for a one-statement read, run in autocommit: no BEGIN and COMMIT
    round trips around it (a single statement sees one consistent snapshot anyway).
    The job status read is the API's hot path."""
    factory = _READ_SESSIONS.get(db)
    if factory is None:
        engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        factory = _READ_SESSIONS.setdefault(db, sessionmaker(engine, expire_on_commit=False))
    with factory() as session:
        yield session


def load_job(session: Session, job_id: str) -> Job:
    """The Job with its children, like `repo.load_job` but in one query (the job and
    its children come back together): the status read is the API's hot path."""
    rows = session.scalars(
        select(JobRow)
        .where(or_(JobRow.id == job_id, JobRow.parent_id == job_id))
        .order_by(JobRow.created_at, JobRow.id)
    ).all()
    job = next((r for r in rows if r.id == job_id), None)
    if job is None:
        raise ModelNotFoundError(f"Job not found ({job_id})", job_id=job_id)
    children = [repo.job_from_row(r) for r in rows if r.id != job_id]
    return repo.job_from_row(job, children)


def list_jobs_page(
    session: Session,
    *,
    status: JobStatus | None = None,
    job_type: JobType | None = None,
    asset_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Top-level jobs, newest first, one page; a cursor that names no job is refused
    (InvalidRequestError) instead of silently restarting from the first page."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE_SIZE}")
    if cursor is not None and session.get(JobRow, cursor) is None:
        raise InvalidRequestError("unknown cursor: pass the nextCursor of a previous page")
    return repo.list_jobs(
        session, status=status, job_type=job_type, asset_id=asset_id, limit=limit, cursor=cursor
    )


def cancel_job(session: Session, job_id: str) -> JobRow:
    """Cancel a queued or running job and its unfinished children.

    Its renditions not made yet are removed (a later request plans them afresh
    instead of finding a row nobody will fill) and its unfinished package is marked
    failed. A worker still running it keeps going until its next write, which it
    then skips. Raises ModelNotFoundError, or ConflictError for a finished job or a
    child (cancel its parent: one decode feeds every child). An upload session whose
    ingest this was is settled in the same transaction. After the commit, the caller
    deletes the job's `staged_source` (nothing else reads it any more).
    """
    row = repo.get_job_row(session, job_id, for_update=True)
    if row.parent_id is not None:
        raise ConflictError(f"job {job_id} is part of job {row.parent_id}: cancel that one")
    now = utcnow()
    active = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    # Conditional, so a worker that finished or failed the job meanwhile wins cleanly.
    changed = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status.in_(active))
        .values(status=JobStatus.CANCELLED.value, message_id=None, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ConflictError(f"job {job_id} is {row.status}; only queued or running jobs cancel")
    session.execute(
        update(JobRow)
        .where(JobRow.parent_id == job_id, JobRow.status.in_(active))
        .values(status=JobStatus.CANCELLED.value, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(RenditionRow)
        .where(RenditionRow.job_id == job_id, RenditionRow.status.in_(_UNFINISHED_RENDITIONS))
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(PackageRow)
        .where(PackageRow.job_id == job_id, PackageRow.status.in_(_UNFINISHED_PACKAGES))
        .values(
            status=PackageStatus.FAILED.value,
            error_name=CANCELLED_ERROR_NAME,
            error_message=f"job {job_id} was cancelled",
            modified_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    row = repo.get_job_row(session, job_id)
    repo.job_ended(session, row)
    return row


def staged_source(row: JobRow | None) -> str | None:
    """The store key of the copy the server staged for one ingest job alone (its params
    say `staged`: an upload's frozen bytes, a bucket object copied in under a
    staged key), which ingest deletes once the original is stored; None for any other
    job or source (a key someone else owns is never deleted), and for parameters that
    do not validate (nothing is deleted on a guess)."""
    if row is None or row.type != JobType.INGEST.value:
        return None
    try:
        params = repo.params_of(row)
    except ModelInvalidError:
        return None
    return params.staged_key() if isinstance(params, IngestParams) else None


def retry_job(session: Session, job_id: str) -> JobRow:
    """Put a failed job back in the queue at the stage it failed in, redoing only what
    failed: its failed renditions (and their child jobs) go back to queued, ready
    ones stay as they are. The caller sends the stage message after commit.

    An original condemned by analysis is given a second look (an explicit retry is an
    operator's call, for example after an ffmpeg upgrade). Raises ModelNotFoundError,
    or ConflictError unless the job is a failed top-level job.
    """
    row = repo.get_job_row(session, job_id, for_update=True)
    if row.parent_id is not None:
        raise ConflictError(f"job {job_id} is part of job {row.parent_id}: retry that one")
    if row.status != JobStatus.FAILED.value or row.stage == JobStage.DONE.value:
        raise ConflictError(f"job {job_id} is {row.status}; only failed jobs can be retried")
    now = utcnow()
    failed_renditions = session.scalars(
        select(RenditionRow).where(
            RenditionRow.job_id == job_id, RenditionRow.status == RenditionStatus.FAILED.value
        )
    ).all()
    again = {r.id for r in failed_renditions}
    for rendition in failed_renditions:
        rendition.status = RenditionStatus.QUEUED.value
        rendition.error_name = rendition.error_message = None
        rendition.modified_at = now
    for child in session.scalars(select(JobRow).where(JobRow.parent_id == job_id)).all():
        if child.status == JobStatus.FAILED.value and _rendition_id(child) in again:
            child.status = JobStatus.QUEUED.value
            child.progress = 0.0
            child.finished_at = None
            child.error_name = child.error_message = None
            child.updated_at = now
    if row.asset_id and row.stage in (JobStage.STORE.value, JobStage.ANALYSE.value):
        asset = session.get(AssetRow, row.asset_id)
        if asset is not None and asset.status == AssetStatus.FAILED.value:
            asset.status = AssetStatus.STORED.value
            asset.error_name = asset.error_message = None
            asset.modified_at = now
    repo.requeue_job(row)  # keeps the last error in view until the retry settles it
    row.attempts = row.lost_runs = 0
    row.progress = 0.0
    row.finished_at = None
    return row


def _rendition_id(child: JobRow) -> str | None:
    """The rendition a child job makes; None when its parameters do not say."""
    try:
        params = repo.params_of(child)
    except ModelInvalidError:
        return None
    return params.rendition_id if isinstance(params, RenditionJobParams) else None
