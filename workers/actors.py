"""The actors: each loads state, calls one pipeline stage, persists, emits, enqueues the next.

Every actor is safe to run twice: keys are content-addressed, rows are upserted,
and JobLifecycle lets only the message holding a job's claim work on it.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import dramatiq

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import InvalidRequestError, MediaMillError, error_from_name
from mediamill.schemas.jobs import JobStage
from mediamill.schemas.media import AssetStatus
from mediamill.storage import repo
from mediamill.storage.blobs import StoredBlob
from mediamill.storage.models import JobRow
from mediamill.workers import runtime
from mediamill.workers.queue import QUEUE_NAME, send_stage, time_limit_ms

log = logging.getLogger(__name__)

ORIGINALS_PREFIX = "originals"
INCOMING_PREFIX = "incoming/"
PROGRESS_WRITE_INTERVAL_S = 1.0
# A job waiting for another job's analysis of the same bytes checks back this often.
WAIT_FOR_ANALYSIS_MS = 1000


def ingest(job_id: str) -> None:
    """Store the original under its SHA-256 (hashing while writing), record the asset,
    and hand the job to analysis unless these bytes were analysed before."""
    rt = runtime.current()
    with rt.db.session() as s:
        params = dict(repo.get_job_row(s, job_id).params)
    source = params.get("source") or {}
    blob, _created = _store_original(rt, source)
    duration_s = _declared_duration(rt, source, blob.key)

    with rt.db.session() as s:
        job = repo.get_job_row(s, job_id, for_update=True)
        created = repo.insert_asset_if_absent(
            s, blob.sha256, blob.key, blob.size_bytes, params.get("filename")
        )
        asset = repo.get_asset_row(s, blob.sha256)
        job.asset_id = asset.id
        if created:
            repo.add_event(
                s, "asset.created", {"asset": repo.asset_from_row(s, asset).to_json_dict()}
            )
        job.params = {**params, "timeLimitMs": time_limit_ms(rt.settings, duration_s)}
        if asset.status == AssetStatus.ANALYSED.value:
            repo.finish_job(job, {"deduplicated": True})
            send_next = False
        elif asset.status == AssetStatus.FAILED.value:
            # Same bytes, same verdict: no second analysis of media known to be bad.
            repo.fail_job(
                s, job, error_from_name(asset.error_name or "", asset.error_message or "")
            )
            send_next = False
        else:
            repo.advance_job(job, JobStage.ANALYSE)
            send_next = True
    if send_next:
        send_stage(rt.broker, job)
    if source.get("kind") == "store" and str(source.get("key", "")).startswith(INCOMING_PREFIX):
        rt.store.delete(source["key"])


def _store_original(rt: runtime.Runtime, source: dict) -> tuple[StoredBlob, bool]:
    kind = source.get("kind")
    if kind == "path":
        path = Path(source["path"])
        if not path.is_file():
            raise InvalidRequestError(f"source file not found: {path}")
        with path.open("rb") as stream:
            return rt.store.put_content_addressed(ORIGINALS_PREFIX, stream)
    if kind == "store":
        with rt.store.open(source["key"]) as stream:
            return rt.store.put_content_addressed(ORIGINALS_PREFIX, stream)
    raise InvalidRequestError(f"unknown ingest source kind {kind!r}")


def _declared_duration(rt: runtime.Runtime, source: dict, key: str) -> float | None:
    """The media's declared duration, read from its header only (a local file, or the
    first bytes of a streamed read), to size the analysis time limit."""
    from mediamill.pipeline.probe import probe_duration_s

    try:
        if source.get("kind") == "path":
            return probe_duration_s(source["path"])
        with rt.store.open(key) as stream:
            return probe_duration_s(stream)
    except MediaMillError:
        return None  # analysis will name the problem


def analyse(job_id: str) -> None:
    """Analyse the job's asset in one streaming pass, unless that already happened."""
    rt = runtime.current()
    lease = timedelta(seconds=rt.settings.job_lease_s)
    with rt.db.session() as s:
        job = repo.get_job_row(s, job_id)
        asset = repo.get_asset_row(s, job.asset_id or "", for_update=True)
        status = asset.status
        busy = status == AssetStatus.ANALYSING.value and asset.modified_at > utcnow() - lease
        if status == AssetStatus.ANALYSED.value:
            repo.finish_job(repo.get_job_row(s, job_id), {"deduplicated": True})
            return
        if status == AssetStatus.FAILED.value:
            error = error_from_name(asset.error_name or "", asset.error_message or "")
            repo.fail_job(s, repo.get_job_row(s, job_id), error)
            return
        if not busy:
            asset.status = AssetStatus.ANALYSING.value
            asset.modified_at = utcnow()
        key = asset.storage_key
    if busy:
        _wait_for_other_analysis(rt, job_id)
        return

    progress = _ProgressWriter(rt, job_id)
    try:
        with rt.store.local_path(key) as path:
            result = _analyse_file()(path, on_progress=progress)
    except BaseException as exc:  # time limits interrupt with a BaseException
        # Bad media condemns the asset (the same bytes will fail the same way);
        # anything else (storage, time limit) leaves it to be analysed again.
        condemned = isinstance(exc, MediaMillError) and exc.permanent
        with rt.db.session() as s:
            row = repo.get_asset_row(s, job.asset_id or "", for_update=True)
            if condemned:
                row.status = AssetStatus.FAILED.value
                row.error_name, row.error_message = exc.name, exc.message
            else:
                row.status = AssetStatus.STORED.value
        raise
    with rt.db.session() as s:
        row = repo.get_asset_row(s, job.asset_id or "", for_update=True)
        repo.record_analysis(row, result)
        repo.add_event(s, "asset.analysed", {"asset": repo.asset_from_row(s, row).to_json_dict()})
        repo.finish_job(repo.get_job_row(s, job_id, for_update=True), {"deduplicated": False})


def _analyse_file():
    """The analysis stage, imported on first use: processes that only enqueue
    (API, CLI) never load the decoding and DSP libraries."""
    from mediamill.pipeline.analysis import analyse_file

    return analyse_file


def _wait_for_other_analysis(rt: runtime.Runtime, job_id: str) -> None:
    """Another job is analysing the same bytes: check back later instead of decoding twice."""
    with rt.db.session() as s:
        job: JobRow = repo.get_job_row(s, job_id, for_update=True)
        repo.requeue_job(job)
    send_stage(rt.broker, job, delay_ms=WAIT_FOR_ANALYSIS_MS)


class _ProgressWriter:
    """Writes stage progress to the job row at most once a second."""

    def __init__(self, rt: runtime.Runtime, job_id: str) -> None:
        self.rt, self.job_id, self.last = rt, job_id, 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_WRITE_INTERVAL_S and fraction < 1.0:
            return
        self.last = now
        try:
            with self.rt.db.session() as s:
                repo.set_progress(s, self.job_id, fraction)
        except Exception:  # progress is advisory; never fail a stage over it
            log.warning("progress update failed for job %s", self.job_id, exc_info=True)


ACTORS = {"ingest": ingest, "analyse": analyse}


def declare_actors(broker: dramatiq.Broker) -> None:
    """Register our actors on `broker` (each broker gets its own Actor objects)."""
    for name, fn in ACTORS.items():
        if name not in broker.actors:
            dramatiq.Actor(
                fn, broker=broker, actor_name=name, queue_name=QUEUE_NAME, priority=0, options={}
            )
