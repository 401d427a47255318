"""Worker heartbeats: each worker process keeps one row fresh while it runs, so an
operator (and /ready) can tell queued work that nothing will consume."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.jobs import JobStatus
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import JobRow, WorkerRow


def beat(session: Session, worker_id: str, hostname: str, pid: int, threads: int) -> None:
    """Insert the worker's row, or refresh its `seen_at`."""
    now = utcnow()
    refreshed = session.execute(
        update(WorkerRow).where(WorkerRow.id == worker_id).values(seen_at=now)
    ).rowcount
    if not refreshed:
        session.execute(
            dialect_insert(session)(WorkerRow)
            .values(
                id=worker_id, hostname=hostname, pid=pid, threads=threads,
                started_at=now, seen_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )  # fmt: skip


def remove(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))


def live_workers(session: Session, stale_s: float) -> int:
    """Workers whose heartbeat is at most `stale_s` old."""
    seen_since = utcnow() - timedelta(seconds=stale_s)
    return int(
        session.scalar(select(func.count()).where(WorkerRow.seen_at >= seen_since)) or 0
    )


def forget_stale(session: Session, seen_before: datetime) -> int:
    """Drop the rows of workers gone without saying so (killed); the count."""
    return session.execute(delete(WorkerRow).where(WorkerRow.seen_at < seen_before)).rowcount


def queued_jobs(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(JobRow).where(
                JobRow.status == JobStatus.QUEUED.value
            )
        )
        or 0
    )
