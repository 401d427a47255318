"""Audit log rows: written in the caller's transaction (so an entry exists exactly when
its action committed), listed newest first, never changed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mediamill.schemas.audit import AuditAction, AuditActor, AuditLogEntry
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import InvalidRequestError, ModelNotFoundError
from mediamill.storage.models import AuditLogRow
from mediamill.storage.repo import keyset_page


def record(
    session: Session,
    actor: AuditActor,
    action: AuditAction,
    resource_type: str,
    resource_id: str,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Add an entry to the caller's transaction; its id."""
    entry_id = str(uuid.uuid4())
    session.add(
        AuditLogRow(
            id=entry_id,
            action=action.value,
            actor_id=actor.actor_id[:64],
            actor_role=actor.actor_role[:32],
            resource_type=resource_type[:100],
            resource_id=resource_id[:200],
            ip_address=(actor.ip_address or None) and actor.ip_address[:64],
            user_agent=(actor.user_agent or None) and actor.user_agent[:512],
            request_id=(actor.request_id or None) and actor.request_id[:64],
            details=metadata or {},
            created_at=utcnow(),
        )
    )
    session.flush()
    return entry_id


def entry_of(row: AuditLogRow) -> AuditLogEntry:
    return AuditLogEntry(
        id=row.id,
        action=row.action,
        actor_id=row.actor_id,
        actor_role=row.actor_role,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
        request_id=row.request_id,
        metadata=row.details or {},
        created_at=row.created_at,
    )


def get_entry(session: Session, entry_id: str) -> AuditLogEntry:
    row = session.get(AuditLogRow, entry_id)
    if row is None:
        raise ModelNotFoundError(f"no audit log entry {entry_id}")
    return entry_of(row)


def _escaped_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_entries(
    session: Session,
    *,
    actor_id: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[AuditLogEntry], str | None]:
    """Entries newest first, filtered (`action` is a prefix); (page, next cursor)."""
    stmt = select(AuditLogRow)
    if actor_id:
        stmt = stmt.where(AuditLogRow.actor_id == actor_id)
    if action:
        stmt = stmt.where(AuditLogRow.action.like(_escaped_prefix(action), escape="\\"))
    if resource_type:
        stmt = stmt.where(AuditLogRow.resource_type == resource_type)
    if resource_id:
        stmt = stmt.where(AuditLogRow.resource_id == resource_id)
    if start:
        stmt = stmt.where(AuditLogRow.created_at >= start)
    if end:
        stmt = stmt.where(AuditLogRow.created_at < end)
    anchor = None
    if cursor:
        anchor = session.get(AuditLogRow, cursor)
        if anchor is None:
            raise InvalidRequestError("cursor does not name an audit log entry; start over")
    rows, next_cursor = keyset_page(session, stmt, AuditLogRow, anchor, limit)
    return [entry_of(r) for r in rows], next_cursor
