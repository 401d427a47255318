"""Starting a job for an asset at most once: a per-asset lock, and the asset's
active jobs.

The API starts an asset's analysis on upload and its packaging on a stream
request. Two requests at the same moment, in any number of processes, must not
both start one: each takes the asset's lock, looks for an active job, and creates
one only if there is none, all in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mediamill.schemas.jobs import JobType
from mediamill.storage.models import AssetRow, JobRow
from mediamill.storage.repo import ACTIVE_STATUSES


def lock_asset(session: Session, asset_id: str) -> None:
    """Hold the asset's write lock until the transaction ends.

    A no-op UPDATE (it sets `modified_at` to itself, so nothing visible changes):
    it locks the row on PostgreSQL and takes the database's write lock on SQLite,
    which ignores SELECT ... FOR UPDATE. A second caller waits here and then sees
    what the first committed.
    """
    session.execute(
        update(AssetRow)
        .where(AssetRow.id == asset_id)
        .values(modified_at=AssetRow.modified_at)
        .execution_options(synchronize_session=False)
    )


def active_jobs(session: Session, asset_id: str, types: Iterable[JobType]) -> list[JobRow]:
    """The asset's queued or running top-level jobs of these types, oldest first."""
    stmt = (
        select(JobRow)
        .where(
            JobRow.asset_id == asset_id,
            JobRow.parent_id.is_(None),
            JobRow.status.in_(ACTIVE_STATUSES),
            JobRow.type.in_([t.value for t in types]),
        )
        .order_by(JobRow.created_at)
    )
    return list(session.scalars(stmt).all())
