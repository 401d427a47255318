"""What route handlers get from the app: the process's runtime (settings, DB, store,
broker)."""

from __future__ import annotations

from fastapi import Request

from mediamill.workers.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime
