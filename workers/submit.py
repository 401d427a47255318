"""Submitting work: the job row is committed first, then its message is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.job_params import (
    IngestParams,
    IngestSource,
    PathSource,
    RenditionPlan,
    StoreSource,
    TrackRequest,
)
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import repo
from mediamill.storage.models import JobRow
from mediamill.workers.queue import send_committed
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

# Storing an original is I/O bound; allow this much time per MiB on top of the base.
STORE_SECONDS_PER_MIB = 0.5


def ingest_job_in(
    session: Session, settings: Settings, params: IngestParams, *, store_s: float | None = None
) -> JobRow:
    """An `ingest` job row for `params`, in the caller's transaction (send it with
    `send_committed` after the commit). Without a time limit in `params`, storing gets
    the base limit plus `store_s` (default: from the declared size)."""
    if params.time_limit_ms is None:
        if store_s is None:
            store_s = params.size_bytes / (1 << 20) * STORE_SECONDS_PER_MIB
        # Storing is I/O: its seconds add to the base as they are, not as media seconds
        # (which the per-media factor scales and max_duration_s caps).
        limit_ms = int((settings.time_limit_base_s + max(store_s, 0.0)) * 1000)
        params = params.model_copy(update={"time_limit_ms": limit_ms})
    return repo.create_job(session, JobType.INGEST, JobStage.STORE, params)


def submit_ingest(
    rt: Runtime,
    source: IngestSource,
    filename: str | None,
    size_bytes: int,
    *,
    plan: RenditionPlan | None = None,
    tracks: TrackRequest | None = None,
    store_s: float | None = None,
    staged: bool = False,
    in_transaction: Callable[[Session, JobRow], None] | None = None,
) -> JobRow:
    """Write an `ingest` job for `source` and enqueue its first stage.

    `plan` (POST /v0/jobs) says which renditions to make and whether to package;
    without it the asset gets the defaults; `tracks` picks the audio / video track of
    a file with several. `store_s` is how long storing may take
    beyond the base limit (default: from the size). If the enqueue fails the job
    stays `queued` and the sweeper sends it later: nothing is lost once the row is
    committed. `staged` marks a source staged (`keys.staged_copy_key`) for this job alone,
    which ingest then deletes (a caller's own key never is). `in_transaction(session,
    job)` runs in the transaction that writes the job (to commit more with it).
    """
    params = IngestParams(
        source=source,
        filename=filename,
        size_bytes=size_bytes,
        plan=plan,
        staged=True if staged else None,
        tracks=tracks,
    )
    with rt.db.session() as s:
        job = ingest_job_in(s, rt.settings, params, store_s=store_s)
        if in_transaction is not None:
            in_transaction(s, job)
    send_committed(rt, job)
    return job


def submit_local_file(rt: Runtime, path: Path, *, stage_in_store: bool) -> JobRow:
    """Ingest a file on this machine.

    `stage_in_store=False` (embedded: the worker shares this filesystem) lets
    the worker read the file where it is. Otherwise the bytes are first copied
    to a staged key in the shared store so that any worker on any machine can
    read them; ingest removes the staged copy once the original is stored.
    """
    path = path.resolve()
    size_bytes = path.stat().st_size
    if stage_in_store:
        key = keys.staged_copy_key()
        with path.open("rb") as stream:
            size_bytes = rt.store.put(key, stream).size_bytes
        source: IngestSource = StoreSource(key=key)
    else:
        source = PathSource(path=str(path))
    return submit_ingest(rt, source, path.name, size_bytes, staged=stage_in_store)
