"""What route handlers get from the app, as FastAPI dependencies (the FastAPI
full-stack template's `api/deps.py`): the process's runtime, a database session, and
the API key a route needs.

`runtime_of` is async on purpose: a sync dependency would cost every request a hop
to the thread pool for one attribute read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from mediamill.api.auth import Principal, require_admin, require_read
from mediamill.api.state import app_runtime
from mediamill.workers.runtime import Runtime


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
