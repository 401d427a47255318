"""Deleting an asset: its original, renditions, packages and every derived file go from
the store, its rendition and package rows from the database, and the row is marked
`deleted` (with an `asset.deleted` event, in the same transaction). The id keeps naming
it: the same bytes uploaded again make it live again (`record_original`).

Refused (ConflictError) while one of its jobs is queued or running: the job would write
renditions back. Idempotent: deleting a deleted asset deletes any file a crash left
behind, and answers the same. Files go while the asset's lock is held, so an upload
of the same bytes that revives it waits until they are gone.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from mediamill.schemas import keys
from mediamill.schemas.api import asset_id_or_none
from mediamill.schemas.audit import AuditAction, AuditActor
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ConflictError, MediaMillError
from mediamill.schemas.jobs import JobStatus
from mediamill.schemas.media import Asset
from mediamill.storage import audit, outbox, repo
from mediamill.storage.asset_admin import drop_derived_rows
from mediamill.storage.asset_jobs import lock_asset
from mediamill.storage.models import JobRow
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

_UNDER_WAY = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def delete_asset(rt: Runtime, asset_id: str, actor: AuditActor | None = None) -> Asset:
    """Delete the asset `asset_id` (ModelNotFoundError if it never existed) and return
    it as it is now: `deleted` true. Audit-logged (by `actor`) when it was live."""
    folded = asset_id_or_none(asset_id) or asset_id
    with rt.db.session() as s:
        row = repo.get_asset_row(s, folded)
        lock_asset(s, row.id)
        s.refresh(row)
        busy = s.scalar(
            select(JobRow.id)
            .where(JobRow.asset_id == row.id, JobRow.status.in_(_UNDER_WAY))
            .limit(1)
        )
        if busy is not None:
            raise ConflictError(
                f"asset {row.id} has a job under way ({busy}): cancel it or let it finish, "
                "then delete"
            )
        was_live = not row.deleted
        if was_live:
            drop_derived_rows(s, row.id)
            row.deleted, row.modified_at = True, utcnow()
            outbox.add_event(
                s, "asset.deleted", {"asset": repo.asset_from_row(s, row).to_json_dict()}
            )
            if actor is not None:
                audit.record(s, actor, AuditAction.ASSET_DELETED, "asset", row.id)
        _delete_files(rt, row.id, row.storage_key)
        return repo.asset_from_row(s, row)


def _delete_files(rt: Runtime, asset_id: str, original_key: str) -> None:
    """Every stored file of the asset: the original, its renditions, its packages. A
    failure to delete one is a StorageError (transient): the caller tries again, and
    the deletion, idempotent, picks up where it stopped."""
    derived = [f"{keys.RENDITIONS}/{asset_id}/", f"{keys.PACKAGES}/{asset_id}/"]
    for key in [original_key, *(k for prefix in derived for k in rt.store.list(prefix))]:
        try:
            rt.store.delete(key)
        except MediaMillError:
            log.warning("could not delete %s of deleted asset %s", key, asset_id)
            raise
