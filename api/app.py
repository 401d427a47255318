"""The FastAPI app: conventions middleware, error handlers, auth'd routers.

The API validates, records and enqueues; it never runs ffmpeg. On the embedded
default (no broker, database or storage URL) it also runs an in-process worker,
so every route can be tried with no services at all.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from starlette.routing import Mount

from mediamill import __version__
from mediamill.api.body_limit import BodyLimitMiddleware
from mediamill.api.cors import PlaybackCorsMiddleware
from mediamill.api.deps import bounded_path_params
from mediamill.api.edge import EmbeddedEdge
from mediamill.api.errors import install_error_handlers
from mediamill.api.metrics import ApiMetrics
from mediamill.api.middleware import ConventionsMiddleware
from mediamill.api.rate_limit import RateLimiter
from mediamill.api.routes import (
    analytics,
    assets,
    audit,
    docs,
    events,
    jobs,
    legacy,
    ops,
    playback,
    uploads,
    webhooks,
)
from mediamill.config.settings import EMBEDDED_EDGE_PATH, Settings, get_settings
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime, set_current
from mediamill.workers.worker import InProcessWorker


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    run_worker: bool | None = None,
) -> FastAPI:
    """An app over `runtime` (built from `settings` when not given). `run_worker`
    defaults to True without a broker URL: the queue is then in this process, and
    nothing else could run what it holds."""
    settings = runtime.settings if runtime is not None else settings or get_settings()
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or build_runtime(settings)
        set_current(rt)
        app.state.runtime = rt
        metrics.add_state_collector(lambda: ops.read_state(rt))
        # What start-up made lives as long as the process: out of the collector's sight,
        # so a full collection scans only what requests made (measured by
        # scripts/bench_playback.py: collections over the whole heap were the p99).
        gc.collect()
        gc.freeze()
        with contextlib.ExitStack() as stack:
            if run_worker if run_worker is not None else settings.in_process_queue:
                stack.enter_context(InProcessWorker(rt))
            yield

    app = FastAPI(
        title="MediaMill",
        version=__version__,
        description="Content Automation API (v0), uploads, bucket events and jobs.",
        lifespan=lifespan,
        # Served by api/routes/docs.py instead, behind a read key.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(bounded_path_params)],
    )
    app.state.metrics = metrics
    app.state.playback_limiter = RateLimiter(settings.playback_rate_per_s)
    install_error_handlers(app)
    # Added first, so it runs inside ConventionsMiddleware: a 413 carries the request id.
    app.add_middleware(
        BodyLimitMiddleware,
        json_max_bytes=settings.max_json_body_bytes,
        upload_max_bytes=settings.upload_max_bytes,
    )
    # Inside ConventionsMiddleware too: a refused preflight carries the request id.
    app.add_middleware(PlaybackCorsMiddleware, allowed_origins=settings.playback_origins)
    app.add_middleware(ConventionsMiddleware, metrics=metrics)
    # First: heartbeats and events are the hot path, and FastAPI tries routes in order
    # (measured: matching past every other route cost a third of a heartbeat's CPU).
    app.include_router(playback.router)
    app.include_router(ops.router)
    app.include_router(assets.router)
    app.include_router(legacy.router)
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(analytics.router)
    app.include_router(audit.router)
    app.include_router(docs.router)
    docs.install_openapi(app, public=settings.public_docs)
    if settings.serves_embedded_edge:
        edge = EmbeddedEdge(lambda: app.state.runtime)
        app.router.routes.append(Mount(EMBEDDED_EDGE_PATH, app=edge, name="edge"))
    return app
