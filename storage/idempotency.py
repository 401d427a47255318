"""Idempotency keys: the first request under a key records its answer; a retry with
the same key and the same body gets that answer back instead of a second resource.

A claim is a row with no answer yet. Its `created_at` is the claim's time and also
its token: a claim left unanswered past the timeout (its process died) is taken over
by a retry, which moves `created_at` on, so the first holder can no longer record an
answer or release the key. Both are conditional UPDATE/DELETEs, atomic on any backend.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import IdempotencyKeyRow


def claim_key(
    session: Session,
    client_id: str,
    route: str,
    key: str,
    request_sha256: str,
    *,
    stale_before: datetime,
) -> tuple[datetime | None, IdempotencyKeyRow | None]:
    """Claim the key: `(claimed_at, None)` when this call holds it now (go ahead and
    do the work; `claimed_at` identifies the claim), either as a new claim or by
    taking over one for the same request that was left unanswered since before
    `stale_before`. Otherwise `(None, row)`: the existing row, answered, or still in
    progress when `status_code` is None, or made by another request."""
    now = utcnow()
    stmt = (
        dialect_insert(session)(IdempotencyKeyRow)
        .values(
            id=str(uuid.uuid4()),
            client_id=client_id,
            route=route,
            key=key,
            request_sha256=request_sha256,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["client_id", "route", "key"])
        .returning(IdempotencyKeyRow.id)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return now, None
    # Of several retries taking over at once, one matches: the others then see the
    # fresh created_at (PostgreSQL re-checks the WHERE after the row lock; SQLite
    # runs one writer at a time).
    taken = session.execute(
        update(IdempotencyKeyRow)
        .where(
            *_same_key(client_id, route, key),
            IdempotencyKeyRow.request_sha256 == request_sha256,
            IdempotencyKeyRow.status_code.is_(None),
            IdempotencyKeyRow.created_at < stale_before,
        )
        .values(created_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken == 1:
        return now, None
    return None, _row(session, client_id, route, key)


def record_answer(
    session: Session,
    client_id: str,
    route: str,
    key: str,
    claimed_at: datetime,
    status_code: int,
    body: Any,
) -> bool:
    """Store the answer of the claim made at `claimed_at`; False (nothing written) when
    that claim was taken over meanwhile. Best written in the transaction that makes
    the resource, so that the resource and its answer commit together."""
    result = session.execute(
        update(IdempotencyKeyRow)
        .where(
            *_same_key(client_id, route, key),
            IdempotencyKeyRow.created_at == claimed_at,
            IdempotencyKeyRow.status_code.is_(None),
        )
        .values(status_code=status_code, response={"body": body})
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release_key(
    session: Session, client_id: str, route: str, key: str, claimed_at: datetime
) -> None:
    """The work failed: forget the claim made at `claimed_at` so that a retry can do
    it (a claim taken over since is the retry's, and stays)."""
    session.execute(
        delete(IdempotencyKeyRow).where(
            *_same_key(client_id, route, key),
            IdempotencyKeyRow.created_at == claimed_at,
            IdempotencyKeyRow.status_code.is_(None),
        )
    )


def _same_key(client_id: str, route: str, key: str) -> tuple[Any, ...]:
    return (
        IdempotencyKeyRow.client_id == client_id,
        IdempotencyKeyRow.route == route,
        IdempotencyKeyRow.key == key,
    )


def _row(session: Session, client_id: str, route: str, key: str) -> IdempotencyKeyRow | None:
    return session.scalars(
        select(IdempotencyKeyRow).where(*_same_key(client_id, route, key))
    ).one_or_none()
