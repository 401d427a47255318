"""The app's per-process state: the runtime `create_app` stored on it."""

from __future__ import annotations

from fastapi import Request

from mediamill.workers.runtime import Runtime


def app_runtime(request: Request) -> Runtime:
    return request.app.state.runtime
