"""Operations: liveness, readiness, Prometheus metrics and the API version."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from mediamill import __version__
from mediamill.api.auth import require_read
from mediamill.api.deps import RuntimeDep
from mediamill.schemas.base import utcnow
from mediamill.storage import repo
from mediamill.storage.workers import live_workers, queued_jobs
from mediamill.workers.health import check_broker, queue_depth
from mediamill.workers.queue import QUEUE_NAME

log = logging.getLogger(__name__)
router = APIRouter()
METRICS_WINDOW = timedelta(hours=1)


@router.get("/health", tags=["operations"])
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", tags=["operations"])
def ready(rt: RuntimeDep, request: Request) -> JSONResponse:
    """Readiness: the database, the broker and the blob store all answer (and the
    playback buffer's Redis, when it is not the broker's), and no job
    waits with no worker alive (`workers`: none seen for `MEDIAMILL_WORKER_STALE_S`
    while jobs are queued); 503 names what failed (each only as "failed": why is
    logged, not told to a caller without a key)."""
    checks: dict[str, str] = {}

    def probe(name: str, fn) -> None:
        try:
            fn()
            checks[name] = "ok"
        except Exception:  # every failure is reported, none raised
            # /ready takes no key: the details (hosts, users, paths) stay in the log.
            log.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = "failed"

    def database() -> None:
        with rt.db.session() as s:
            s.execute(text("SELECT 1"))

    def workers() -> None:
        with rt.db.session() as s:
            if queued_jobs(s) and not live_workers(s, rt.settings.worker_stale_s):
                raise RuntimeError(
                    f"jobs are queued and no worker was seen for {rt.settings.worker_stale_s} s"
                )

    probe("database", database)
    probe("broker", lambda: check_broker(rt.broker))
    probe("store", lambda: rt.store.exists("ready-probe"))
    if rt.settings.playback_buffer_url is not None:  # a Redis of its own for heartbeats
        probe("playback", lambda: rt.playback_buffer().ping())
    if checks["database"] == "ok":
        probe("workers", workers)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return JSONResponse(
            {
                "name": "ServiceUnavailableError",
                "message": f"not ready: {', '.join(failed)}",
                "statusCode": 503,
                "requestId": getattr(request.state, "request_id", ""),
                "checks": checks,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", tags=["operations"], dependencies=[Depends(require_read)])
def metrics(request: Request) -> Response:
    """Prometheus text format: jobs by status, stage durations, queue depth, HTTP latency."""
    return Response(
        request.app.state.metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


def read_state(rt) -> dict[str, dict]:
    """What the metrics collector reads on each scrape."""
    with rt.db.session() as s:
        state = repo.job_metrics(s, utcnow() - METRICS_WINDOW)
        state["workersLive"] = {"": live_workers(s, rt.settings.worker_stale_s)}
    state["queueDepth"] = {QUEUE_NAME: queue_depth(rt.broker)}
    return state


@router.get("/v0/version", tags=["content"], dependencies=[Depends(require_read)])
def version() -> dict[str, str]:
    """The API's name and version."""
    return {"name": "mediamill", "version": __version__}
