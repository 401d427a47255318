"""`Idempotency-Key` on POSTs that create things (`POST /v0/jobs`, `POST /v0/uploads`):
the same key and body from the same client answer the first response again (with
`Idempotent-Replayed: true`) instead of creating a second resource; the same key
with another body is a 409; a key whose first request is still running is a 409 too,
until `MEDIAMILL_IDEMPOTENCY_CLAIM_TIMEOUT_S` has passed without an answer (its
process died): then a retry takes the key over and does the work.

Where practical the answer is written in the transaction that makes the resource
(`idempotent_in`), so a crash leaves either both or neither: never a resource whose
key looks unanswered and could be taken over to make a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from mediamill.api.auth import Principal
from mediamill.api.state import app_runtime
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ConflictError, InvalidRequestError
from mediamill.storage import idempotency

MAX_KEY_LENGTH = 255
# Claiming twice covers a claim released between our insert and our read.
_CLAIM_TRIES = 2

# record(session, status, body): store the answer inside the caller's transaction.
Record = Callable[[Session, int, Any], None]


@dataclass
class _Claim:
    """The key this request holds, from `claimed_at`."""

    client_id: str
    route: str
    key: str
    claimed_at: datetime
    recorded: bool = False

    def record(self, session: Session, status: int, body: Any) -> None:
        """Write the answer in `session`; ConflictError (roll the resource back) when a
        retry took the key over meanwhile: the answer is the retry's to give."""
        args = (self.client_id, self.route, self.key, self.claimed_at)
        if not idempotency.record_answer(session, *args, status, body):
            raise ConflictError(
                "this request's Idempotency-Key was taken over by a retry after it went "
                "unanswered too long; that retry's answer stands"
            )
        self.recorded = True


def _no_record(session: Session, status: int, body: Any) -> None:
    """Without an Idempotency-Key there is nothing to record."""


def idempotent(
    request: Request,
    principal: Principal,
    route: str,
    body: Any,
    produce: Callable[[], tuple[int, Any]],
) -> JSONResponse:
    """Run `produce() -> (status, json body)` at most once per Idempotency-Key; the
    answer is recorded in a transaction of its own after it."""
    return idempotent_in(request, principal, route, body, lambda _record: produce())


def idempotent_in(
    request: Request,
    principal: Principal,
    route: str,
    body: Any,
    produce: Callable[[Record], tuple[int, Any]],
) -> JSONResponse:
    """Run `produce(record) -> (status, json body)` at most once per Idempotency-Key.
    `produce` calls `record(session, status, body)` in the transaction that makes the
    resource; if it does not, the answer is recorded afterwards."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, answer = produce(_no_record)
        return JSONResponse(answer, status_code=status)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    rt = app_runtime(request)
    db = rt.db
    stale_before = utcnow() - timedelta(seconds=rt.settings.idempotency_claim_timeout_s)
    claimed_at = None
    for _ in range(_CLAIM_TRIES):
        with db.session() as s:
            claimed_at, existing = idempotency.claim_key(
                s, principal.client_id, route, key, digest, stale_before=stale_before
            )
            if existing is not None:
                if existing.request_sha256 != digest:
                    raise ConflictError("this Idempotency-Key was used with a different request")
                if existing.status_code is None:
                    raise ConflictError("a request with this Idempotency-Key is still in progress")
                return JSONResponse(
                    (existing.response or {}).get("body"),
                    status_code=existing.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )
        if claimed_at is not None:
            break
    if claimed_at is None:
        raise ConflictError("a request with this Idempotency-Key is still in progress")
    claim = _Claim(principal.client_id, route, key, claimed_at)
    try:
        status, answer = produce(claim.record)
    except BaseException:
        with db.session() as s:
            idempotency.release_key(s, claim.client_id, route, key, claimed_at)
        raise
    if not claim.recorded:
        with db.session() as s:
            claim.record(s, status, answer)
    return JSONResponse(answer, status_code=status)
