"""Idempotency keys: the first request under a key records its answer; a retry with
the same key and the same body gets that answer back instead of a second resource."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.storage.models import IdempotencyKeyRow
from mediamill.storage.repo import dialect_insert


def claim_key(
    session: Session, client_id: str, route: str, key: str, request_sha256: str
) -> IdempotencyKeyRow | None:
    """None when this call claimed the key (go ahead and do the work); otherwise the
    existing row (answered, or still in progress when `status_code` is None)."""
    stmt = (
        dialect_insert(session)(IdempotencyKeyRow)
        .values(
            id=str(uuid.uuid4()),
            client_id=client_id,
            route=route,
            key=key,
            request_sha256=request_sha256,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["client_id", "route", "key"])
        .returning(IdempotencyKeyRow.id)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return None
    return _row(session, client_id, route, key)


def record_answer(
    session: Session, client_id: str, route: str, key: str, status_code: int, body: Any
) -> None:
    row = _row(session, client_id, route, key)
    if row is not None:
        row.status_code, row.response = status_code, {"body": body}


def release_key(session: Session, client_id: str, route: str, key: str) -> None:
    """The work failed: forget the key so that a retry can do it."""
    session.execute(
        delete(IdempotencyKeyRow).where(
            IdempotencyKeyRow.client_id == client_id,
            IdempotencyKeyRow.route == route,
            IdempotencyKeyRow.key == key,
        )
    )


def _row(session: Session, client_id: str, route: str, key: str) -> IdempotencyKeyRow | None:
    return session.scalars(
        select(IdempotencyKeyRow).where(
            IdempotencyKeyRow.client_id == client_id,
            IdempotencyKeyRow.route == route,
            IdempotencyKeyRow.key == key,
        )
    ).one_or_none()
