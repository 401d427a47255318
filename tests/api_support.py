"""Driving the HTTP API in tests: an app over a runtime, with API keys made for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.config.settings import Settings, get_settings
from mediamill.storage.api_keys import create_api_key
from mediamill.workers.runtime import Runtime


@dataclass
class Api:
    client: TestClient
    rt: Runtime
    admin: dict[str, str]  # headers of an admin key (x-client-id + x-authentication-token)
    read: dict[str, str]  # headers of a read key (X-API-Key form)


@contextmanager
def running_api(
    settings: Settings | None = None, *, run_worker: bool | None = None
) -> Iterator[Api]:
    """The app over `settings` (default: the environment's), lifespan started (so the
    embedded default runs its in-process worker), with one admin and one read key."""
    app = create_app(settings or get_settings(), run_worker=run_worker)
    with TestClient(app, raise_server_exceptions=False) as client:
        rt = app.state.runtime
        with rt.db.session() as s:
            admin = create_api_key(s, "admin", "test admin")
            read = create_api_key(s, "read", "test read")
        yield Api(
            client,
            rt,
            {"x-client-id": admin.client_id, "x-authentication-token": admin.token},
            {"X-API-Key": read.api_key},
        )
