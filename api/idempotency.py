"""`Idempotency-Key` on POSTs that create things (`POST /v0/jobs`, `POST /v0/uploads`):
the same key and body from the same client answer the first response again (with
`Idempotent-Replayed: true`) instead of creating a second resource; the same key
with another body is a 409; a key whose first request is still running is a 409 too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from mediamill.api.auth import Principal
from mediamill.api.deps import runtime_of
from mediamill.schemas.errors import ConflictError, InvalidRequestError
from mediamill.storage import idempotency

MAX_KEY_LENGTH = 255


def idempotent(
    request: Request,
    principal: Principal,
    route: str,
    body: Any,
    produce: Callable[[], tuple[int, Any]],
) -> JSONResponse:
    """Run `produce() -> (status, json body)` at most once per Idempotency-Key."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, answer = produce()
        return JSONResponse(answer, status_code=status)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    db = runtime_of(request).db
    with db.session() as s:
        existing = idempotency.claim_key(s, principal.client_id, route, key, digest)
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
    try:
        status, answer = produce()
    except BaseException:
        with db.session() as s:
            idempotency.release_key(s, principal.client_id, route, key)
        raise
    with db.session() as s:
        idempotency.record_answer(s, principal.client_id, route, key, status, answer)
    return JSONResponse(answer, status_code=status)
