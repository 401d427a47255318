"""The outbox: events written in the transaction of the state change they describe.

The webhook dispatcher delivers them after commit (`workers/webhooks.py`), so an
event is never lost and never sent for a change that rolled back.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.storage.models import OutboxEventRow


def add_event(session: Session, event_type: str, data: dict[str, Any]) -> OutboxEventRow:
    """Record an event in the outbox, inside the caller's transaction."""
    row = OutboxEventRow(id=str(uuid.uuid4()), type=event_type, created_at=utcnow(), data=data)
    session.add(row)
    return row


def list_events(session: Session, event_type: str | None = None) -> list[OutboxEventRow]:
    stmt = select(OutboxEventRow).order_by(OutboxEventRow.created_at, OutboxEventRow.id)
    if event_type:
        stmt = stmt.where(OutboxEventRow.type == event_type)
    return list(session.scalars(stmt).all())
