"""What route handlers get from the app, as FastAPI dependencies (the FastAPI
full-stack template's `api/deps.py`): the process's runtime, a database session, and
the API key a route needs; and `bounded_path_params`, which every route runs first.

`runtime_of` is async on purpose: a sync dependency would cost every request a hop
to the thread pool for one attribute read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from mediamill.api.auth import Principal, require_admin, require_player, require_read
from mediamill.api.errors import request_id
from mediamill.api.state import app_runtime
from mediamill.schemas.audit import MAX_USER_AGENT_CHARS, AuditActor
from mediamill.schemas.errors import InvalidRequestError
from mediamill.workers.runtime import Runtime

# The longest id, token or composite key a path names (a legacy composite key:
# `trackToken:` and a token of 128 characters).
MAX_PATH_PARAM_CHARS = 160


async def bounded_path_params(request: Request) -> None:
    """A named 400 for a path parameter longer than any id, token or key can be, before
    a route looks it up (a 60 KB id would be echoed whole by its 404)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and len(value) > MAX_PATH_PARAM_CHARS:
            raise InvalidRequestError(
                f"path parameter {name} is {len(value)} characters long; ids, tokens and "
                f"keys in a path have at most {MAX_PATH_PARAM_CHARS}"
            )


async def runtime_of(request: Request) -> Runtime:
    return app_runtime(request)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def session_of(rt: RuntimeDep) -> Iterator[Session]:
    """One unit of work for a read-only route (committed, or rolled back on error, when
    the route returns). Routes that write and then enqueue open their own sessions:
    the row must be committed before its message is sent."""
    with rt.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(session_of)]
ReadKey = Annotated[Principal, Depends(require_read)]
AdminKey = Annotated[Principal, Depends(require_admin)]


async def admin_actor(
    request: Request,
    principal: Principal = Depends(require_admin),  # noqa: B008
) -> AuditActor:
    """The admin key's holder, as the audit log records them, and the request."""
    agent = request.headers.get("user-agent")
    return AuditActor(
        actor_id=principal.client_id,
        actor_role=principal.scope,
        ip_address=request.client.host if request.client else None,
        user_agent=agent[:MAX_USER_AGENT_CHARS] if agent else None,
        request_id=request_id(request) or None,
    )


AdminActor = Annotated[AuditActor, Depends(admin_actor)]
PlayerKey = Annotated[Principal, Depends(require_player)]
