"""The actors: each loads state, calls one pipeline stage, persists, emits, enqueues the next.

Every actor is safe to run twice: keys are content-addressed, rows are upserted,
and JobLifecycle lets only the message holding a job's claim work on it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dramatiq
from sqlalchemy import select
from sqlalchemy.orm import Session

from mediamill.pipeline.limits import MediaLimits
from mediamill.schemas import keys
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    ConflictError,
    InvalidRequestError,
    LowQualityError,
    MediaError,
    MediaMillError,
    ModelInvalidError,
    ModelNotFoundError,
    SizeMismatchError,
    UnsupportedRenditionError,
    error_from_name,
)
from mediamill.schemas.job_params import (
    IngestParams,
    IngestSource,
    PathSource,
    RenditionJobParams,
    RenditionPlan,
    StoredOriginal,
    StoredSource,
    StoreSource,
    TrackRequest,
)
from mediamill.schemas.jobs import JobStage, JobStatus
from mediamill.schemas.media import Asset, AssetStatus, LoudnessStats, MediaInfo
from mediamill.schemas.renditions import RenditionSpec, RenditionStatus
from mediamill.storage import outbox, repo
from mediamill.storage.blobs import StoredBlob
from mediamill.storage.models import JobRow, RenditionRow
from mediamill.workers import runtime
from mediamill.workers.assets import record_original
from mediamill.workers.edge_logs import EDGE_LOG_ACTOR, ingest_edge_log
from mediamill.workers.middleware import owned_job
from mediamill.workers.packages import package, plan_package
from mediamill.workers.playback_flush import FLUSH_ACTOR, flush_playback
from mediamill.workers.queue import QUEUE_NAME, send_committed, time_limit_ms
from mediamill.workers.renditions import add_renditions, plan_renditions, transcode_time_limit_ms
from mediamill.workers.url_source import open_source_url, parse_allow_hosts
from mediamill.workers.views import VIEWS_ACTOR, update_views

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 1.0
# A job waiting for another job's analysis of the same bytes checks back this often.
WAIT_FOR_ANALYSIS_MS = 1000


def ingest(job_id: str) -> None:
    """Store the original under its SHA-256 (hashing while writing), record the asset,
    and hand the job to analysis unless these bytes were analysed before."""
    rt = runtime.current()
    with rt.db.session() as s:
        params = _ingest_params(repo.get_job_row(s, job_id))
    staged = params.staged_key()
    if params.stored is not None:  # an earlier run stored and recorded it, then died
        blob = StoredBlob(params.stored.key, params.stored.size_bytes, params.stored.sha256)
    else:
        # Bytes the server staged have a known size: anything else is not what was checked.
        blob = _store_original(rt, params.source, params.size_bytes if staged else None)
    if staged is not None:
        params = _drop_staged_copy(rt, job_id, staged, params, blob)
    duration_s = _known_duration(rt, blob.sha256)
    if duration_s is None:
        duration_s = _declared_duration(rt, params.source, blob.key)
    params.time_limit_ms = time_limit_ms(rt.settings, duration_s)

    with rt.db.session() as s:
        asset = record_original(s, blob, params.filename)
        job = owned_job(s, job_id)
        if job is None:  # cancelled (or taken over) while the bytes were stored
            send_next = False
        else:
            job.asset_id = asset.id
            repo.set_params(job, params)
            if asset.status == AssetStatus.ANALYSED.value:
                conflict = _track_conflict(job, repo.asset_from_row(s, asset))
                if conflict is not None:
                    repo.fail_job(s, job, conflict)
                    send_next = False
                elif params.plan is not None:  # renditions asked for: plan them on the asset
                    send_next = _plan_renditions(rt, s, job, repo.asset_from_row(s, asset))
                else:
                    repo.finish_job(job, {"deduplicated": True})
                    send_next = False
            elif asset.status == AssetStatus.FAILED.value:
                # Same bytes, same verdict: no second analysis of media known to be bad.
                error = error_from_name(asset.error_name or "", asset.error_message or "")
                repo.fail_job(s, job, error)
                send_next = False
            else:
                repo.advance_job(job, JobStage.ANALYSE)
                send_next = True
    if send_next:
        send_committed(rt, job)


def _tracks_asked(job: JobRow) -> TrackRequest:
    """The tracks an ingest job asks for (none asked: the defaults). Parameters that do
    not validate ask for none here: planning fails the job on them, analysis kept."""
    try:
        params = repo.params_of(job)
    except ModelInvalidError:
        return TrackRequest()
    tracks = params.tracks if isinstance(params, IngestParams) else None
    return tracks or TrackRequest()


def _track_conflict(job: JobRow, asset: Asset) -> ConflictError | None:
    """A job asking for another track than the one the (same bytes') asset was made
    from: one original has one choice, so the job fails naming the recorded one."""
    asked, made = _tracks_asked(job), asset.tracks
    for kind in ("audio", "video"):
        index = getattr(asked, kind)
        if index is None:
            continue
        chosen = getattr(made, kind) if made is not None else None
        if made is None:  # analysed before tracks were recorded: which one is unknown
            return ConflictError(
                f"asset {asset.original_asset_id} was analysed before its tracks were "
                f"recorded; {kind} track {index} cannot be asked for the same bytes"
            )
        if chosen is None:
            return ConflictError(
                f"asset {asset.original_asset_id} has no {kind} track MediaMill took; "
                f"{kind} track {index} cannot be used"
            )
        if chosen.index != index:
            return ConflictError(
                f"asset {asset.original_asset_id} was made from {kind} track "
                f"{chosen.index} ({chosen.reason}); {kind} track {index} cannot be used "
                "for the same bytes"
            )
    return None


def _ingest_params(job: JobRow) -> IngestParams:
    params = repo.params_of(job)
    if not isinstance(params, IngestParams):
        raise ModelInvalidError(f"job {job.id} is a {job.type} job, not an ingest")
    return params


def _drop_staged_copy(
    rt: runtime.Runtime, job_id: str, staged: str, params: IngestParams, blob: StoredBlob
) -> IngestParams:
    """Delete the copy the server staged for this job (never a caller's key) once the
    original is stored and recorded on the job (`params.stored`), and before the job
    moves on: a worker killed in between leaves the job in this stage, and its next run
    finds the original recorded, deletes the copy and carries on. (Deleting after the
    job moved on leaked the copy whenever the worker died in between.) The params."""
    if params.stored is None:
        stored = StoredOriginal(key=blob.key, size_bytes=blob.size_bytes, sha256=blob.sha256)
        params = params.model_copy(update={"stored": stored})
        with rt.db.session() as s:
            job = owned_job(s, job_id)
            if job is not None:
                repo.set_params(job, params)
            elif repo.get_job_row(s, job_id).status != JobStatus.CANCELLED.value:
                return params  # taken over by another message: the copy is its source
    rt.store.discard(staged)  # the original is safe; a leftover copy is only garbage
    return params


def _store_original(
    rt: runtime.Runtime, source: IngestSource, declared_bytes: int | None = None
) -> StoredBlob:
    """Store the source's bytes under their SHA-256 (`keys.original_key`). With `declared_bytes`, a
    store source of any other size fails the job for good (SizeMismatchError)."""
    limits = MediaLimits.from_settings(rt.settings)
    if isinstance(source, PathSource):
        path = Path(source.path)
        if not path.is_file():
            raise InvalidRequestError(f"source file not found: {path}")
        limits.check_size(path.stat().st_size)
        with path.open("rb") as stream:
            return rt.store.put_content_addressed(keys.ORIGINALS, stream)[0]
    if isinstance(source, StoreSource):
        size_bytes = rt.store.size(source.key)
        if declared_bytes is not None:
            _check_size(source.key, size_bytes, declared_bytes)
        limits.check_size(size_bytes)
        with rt.store.open(source.key) as stream:
            blob, _created = rt.store.put_content_addressed(keys.ORIGINALS, stream)
        if declared_bytes is not None:
            _check_size(source.key, blob.size_bytes, declared_bytes)
        return blob
    if isinstance(source, StoredSource):
        # Already stored under its SHA-256 by whoever hashed the bytes while writing
        # them (POST /v0/assets): no second copy.
        if source.key != keys.original_key(source.sha256):
            raise InvalidRequestError(f"stored source {source.key!r} is not content-addressed")
        return StoredBlob(source.key, rt.store.size(source.key), source.sha256)
    settings = rt.settings
    with open_source_url(
        source.url,
        allow_private=settings.allow_private_url_ingest,
        allow_hosts=parse_allow_hosts(settings.url_ingest_allow_hosts),
        max_bytes=min(settings.url_ingest_max_bytes, settings.upload_max_bytes),
        timeout_s=settings.url_ingest_timeout_s,
        read_timeout_s=settings.url_ingest_read_timeout_s,
    ) as stream:
        return rt.store.put_content_addressed(keys.ORIGINALS, stream)[0]


def _check_size(key: str, size_bytes: int, declared_bytes: int) -> None:
    if size_bytes != declared_bytes:
        raise SizeMismatchError(
            f"the staged object {key!r} holds {size_bytes} bytes but {declared_bytes} were "
            "declared: it changed after it was checked, so it is not ingested (upload again)",
            key=key,
        )


def _known_duration(rt: runtime.Runtime, asset_id: str) -> float | None:
    """The duration of bytes analysed before (0 for bytes that failed): their header
    need not be read again, and bytes that crashed a decoder are not handed to one."""
    with rt.db.session() as s:
        try:
            row = repo.get_asset_row(s, asset_id)
        except ModelNotFoundError:
            return None
        if row.status == AssetStatus.FAILED.value:
            return 0.0
        if row.status == AssetStatus.ANALYSED.value:
            return (row.duration_ms or 0) / 1000
    return None


def _declared_duration(rt: runtime.Runtime, source: IngestSource, key: str) -> float | None:
    """The media's declared duration, read from its header only (a local file, or the
    first bytes of a streamed read) in a native child, to size the analysis time limit."""
    try:
        if isinstance(source, PathSource):
            return rt.native().probe_duration_s(source.path)
        with rt.store.open(key) as stream:
            return rt.native().probe_duration_s(stream)
    except MediaMillError:
        return None  # analysis will name the problem


def analyse(job_id: str) -> None:
    """Analyse the job's asset in one streaming pass, unless that already happened."""
    rt = runtime.current()
    send: JobRow | None = None
    with rt.db.session() as s:
        job = repo.get_job_row(s, job_id)
        asset = repo.get_asset_row(s, job.asset_id or "")
        known = asset.status in (AssetStatus.ANALYSED.value, AssetStatus.FAILED.value)
        if known and (owned := owned_job(s, job_id)) is not None:
            if asset.status == AssetStatus.FAILED.value:
                error = error_from_name(asset.error_name or "", asset.error_message or "")
                repo.fail_job(s, owned, error)
            elif (conflict := _track_conflict(owned, repo.asset_from_row(s, asset))) is not None:
                repo.fail_job(s, owned, conflict)
            elif _ingest_plan(owned) is not None:  # renditions asked for: plan them now
                if _plan_renditions(rt, s, owned, repo.asset_from_row(s, asset)):
                    send = owned
            else:
                repo.finish_job(owned, {"deduplicated": True})
        claimed = not known and repo.claim_asset_analysis(s, asset.id, rt.settings.job_lease_s)
        key = asset.storage_key
    if known:
        if send is not None:
            send_committed(rt, send)
        return
    if not claimed:
        _wait_for_other_analysis(rt, job_id)
        return

    progress = _ProgressWriter(rt, job_id)
    asked = _tracks_asked(job)
    try:
        with rt.store.local_path(key) as path:
            result = rt.native().analyse(
                path,
                on_progress=progress,
                limits=MediaLimits.from_settings(rt.settings),
                audio_track=asked.audio,
                video_track=asked.video,
            )
    except BaseException as exc:  # time limits interrupt with a BaseException
        # Bad media condemns the asset (the same bytes will fail the same way);
        # anything else (storage, a missing blob, a time limit) leaves it to be
        # analysed again by a later job.
        # Not when the job asked for a track: the bytes may be fine with another one.
        condemned = isinstance(exc, MediaError) and asked == TrackRequest()
        with rt.db.session() as s:
            row = repo.get_asset_row(s, job.asset_id or "", for_update=True)
            if condemned:
                row.status = AssetStatus.FAILED.value
                row.error_name, row.error_message = exc.name, exc.message
            else:
                row.status = AssetStatus.STORED.value
        raise
    with rt.db.session() as s:
        # The analysis describes the bytes, whoever asked: it is recorded even when
        # the job was cancelled meanwhile, but only the owner plans what comes next.
        row = repo.get_asset_row(s, job.asset_id or "", for_update=True)
        repo.record_analysis(row, result)
        asset = repo.asset_from_row(s, row)
        outbox.add_event(s, "asset.analysed", {"asset": asset.to_json_dict()})
        owned = owned_job(s, job_id)
        if owned is not None and _plan_renditions(rt, s, owned, asset):
            send = owned
    if send is not None:
        send_committed(rt, send)


def _ingest_plan(job: JobRow) -> RenditionPlan | None:
    params = repo.params_of(job)
    return params.plan if isinstance(params, IngestParams) else None


def _plan_renditions(rt: runtime.Runtime, s: Session, job: JobRow, asset: Asset) -> bool:
    """Hand the job to the transcode stage with its renditions and the package ladder
    (then to packaging), or to packaging when they all exist. True when a stage
    message is due. The plan (POST /v0/jobs), or without one the defaults and the
    package, is resolved against the asset once, here. A rendition asked for that this
    original cannot give (an mp4 of audio, or a quality it lacks under `exact`), or
    parameters that do not validate, fail the job, analysis kept; defaults that do not
    apply are only skipped."""
    try:  # resolved before any row is written, so a refusal leaves nothing half-planned
        # Invalid parameters fail the job here, in the transaction that records the
        # analysis, so the analysis is kept instead of rolled back with the error.
        params = _ingest_params(job)
        wanted, ladder = plan_renditions(rt.settings, params.plan or RenditionPlan(), asset)
    except (LowQualityError, UnsupportedRenditionError, ModelInvalidError) as exc:
        repo.fail_job(s, job, exc)
        return False
    if not wanted:
        repo.finish_job(job, {"deduplicated": False})
        return False
    rows = add_renditions(s, job, asset, wanted)
    params.package = bool(ladder)
    if not rows and not ladder:
        repo.set_params(job, params)
        repo.finish_job(job, {"deduplicated": False})
        return False
    if not rows:
        repo.set_params(job, params)
        plan_package(rt.settings, job, asset)
        return True
    repo.advance_job(job, JobStage.TRANSCODE)
    specs = [item.requested for item in wanted]
    params.time_limit_ms = transcode_time_limit_ms(rt.settings, asset, specs)
    repo.set_params(job, params)
    return True


def transcode(job_id: str) -> None:
    """Make every rendition this job owns from ONE decode of the original, measure
    each, store it under its spec's key, and record it."""
    rt = runtime.current()
    with rt.db.session() as s:
        job = owned_job(s, job_id)
        if job is None:  # cancelled between the claim and here
            return
        asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id or ""))
        storage_key = repo.get_asset_row(s, asset.original_asset_id).storage_key
        rows = [r for r in repo.renditions_of_job(s, job_id) if r.status != "ready"]
        for r in rows:
            r.status, r.modified_at = RenditionStatus.RUNNING.value, utcnow()
        _set_children(s, job_id, JobStatus.RUNNING)
        specs = [RenditionSpec.model_validate(r.spec) for r in rows]
        row_ids = [r.id for r in rows]
        time_limit_s = (repo.params_of(job).time_limit_ms or 600_000) / 1000
    if not rows:
        _after_transcode(rt, job_id, asset, 0)
        return
    # PyAV and numpy load only where a transcode runs (the API declares this actor too).
    from mediamill.pipeline.transcode import plan_output, produce

    media = MediaInfo.model_validate(asset.model_dump())
    loudness = LoudnessStats.model_validate(asset.model_dump())
    progress = _ProgressWriter(rt, job_id, children=True)
    try:
        with rt.store.local_path(storage_key) as source, runtime.work_dir(rt.settings) as tmp:
            outputs = [
                plan_output(
                    spec,
                    Path(tmp) / f"{i}.{spec.format.extension}",
                    loudness,
                    ceiling_dbtp=rt.settings.rendition_true_peak_dbtp,
                    source_channels=media.channels,
                )
                for i, spec in enumerate(specs)
            ]
            produced = produce(
                source,
                outputs,
                media,
                timeout_s=time_limit_s * 0.95,
                on_progress=progress,
                measure=lambda path: rt.native().analyse(path, stage="transcode"),
            )
            for row_id, spec, made in zip(row_ids, specs, produced, strict=True):
                key = keys.rendition_key(
                    asset.original_asset_id, spec.spec_id, spec.format.extension
                )
                with made.output.path.open("rb") as f:
                    blob = rt.store.put(key, f)
                with rt.db.session() as s:
                    if owned_job(s, job_id) is None:  # cancelled: record nothing more
                        return
                    row = s.get(RenditionRow, row_id)
                    repo.record_rendition(
                        row, blob.key, blob.size_bytes, blob.sha256, made.measured,
                        notes=made.output.notes,
                    )  # fmt: skip
                    outbox.add_event(
                        s,
                        "rendition.ready",
                        {"rendition": repo.rendition_from_row(row).to_json_dict()},
                    )
                    _finish_child(s, job_id, row_id, JobStatus.SUCCEEDED)
    except BaseException as exc:
        permanent = isinstance(exc, MediaMillError) and exc.permanent
        with rt.db.session() as s:
            owned = owned_job(s, job_id) is not None
            for row_id in row_ids if owned else []:
                row = s.get(RenditionRow, row_id)
                if row.status == RenditionStatus.READY.value:
                    continue
                row.modified_at = utcnow()
                if permanent:
                    row.status = RenditionStatus.FAILED.value
                    row.error_name, row.error_message = exc.name, exc.message
                    outbox.add_event(
                        s,
                        "rendition.failed",
                        {"rendition": repo.rendition_from_row(row).to_json_dict()},
                    )
                    _finish_child(s, job_id, row_id, JobStatus.FAILED, exc)
                else:
                    row.status = RenditionStatus.QUEUED.value
            if owned and not permanent:
                _set_children(s, job_id, JobStatus.QUEUED)
        raise
    _after_transcode(rt, job_id, asset, len(rows))


def _after_transcode(rt: runtime.Runtime, job_id: str, asset: Asset, made: int) -> None:
    """Finish the job, or hand it to packaging when it was planned with a package."""
    with rt.db.session() as s:
        job = owned_job(s, job_id)
        if job is None:
            return
        if not _ingest_package(job):
            repo.finish_job(job, {"renditions": made})
            return
        plan_package(rt.settings, job, asset)
    send_committed(rt, job)


def _ingest_package(job: JobRow) -> bool:
    """Whether packaging follows this job's transcode (planned with a package)."""
    params = repo.params_of(job)
    return isinstance(params, IngestParams) and bool(params.package)


def _children(s: Session, job_id: str) -> list[JobRow]:
    return list(s.scalars(select(JobRow).where(JobRow.parent_id == job_id)).all())


def _set_children(s: Session, job_id: str, status: JobStatus) -> None:
    now = utcnow()
    for child in _children(s, job_id):
        if not JobStatus(child.status).terminal:
            child.status, child.updated_at = status.value, now
            if status is JobStatus.RUNNING and child.started_at is None:
                child.started_at = now


def _finish_child(
    s: Session,
    job_id: str,
    rendition_id: str,
    status: JobStatus,
    error: MediaMillError | None = None,
) -> None:
    for child in _children(s, job_id):
        params = repo.params_of(child)
        if isinstance(params, RenditionJobParams) and params.rendition_id == rendition_id:
            if status is JobStatus.SUCCEEDED:
                repo.finish_job(child, {"renditionId": rendition_id})
            elif error is not None:
                child.status, child.error_name, child.error_message = (
                    status.value,
                    error.name,
                    error.message,
                )
                child.finished_at = child.updated_at = utcnow()


def _wait_for_other_analysis(rt: runtime.Runtime, job_id: str) -> None:
    """Another job is analysing the same bytes: check back later instead of decoding twice."""
    with rt.db.session() as s:
        job = owned_job(s, job_id)
        if job is None:
            return
        repo.requeue_job(job)
        job.attempts -= 1  # waiting is not an attempt
    send_committed(rt, job, delay_ms=WAIT_FOR_ANALYSIS_MS)


class _ProgressWriter:
    """Writes stage progress to the job row (and its children) at most once a second."""

    def __init__(self, rt: runtime.Runtime, job_id: str, children: bool = False) -> None:
        self.rt, self.job_id, self.last, self.children = rt, job_id, 0.0, children

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_WRITE_INTERVAL_S and fraction < 1.0:
            return
        self.last = now
        try:
            with self.rt.db.session() as s:
                repo.set_progress(s, self.job_id, fraction)
                if self.children:  # one decode feeds every output: they advance together
                    for child in _children(s, self.job_id):
                        if child.status == JobStatus.RUNNING.value:
                            repo.set_progress(s, child.id, fraction)
        except Exception:  # progress is advisory; never fail a stage over it
            log.warning("progress update failed for job %s", self.job_id, exc_info=True)


ACTORS = {
    "ingest": ingest,
    "analyse": analyse,
    "transcode": transcode,
    "package": package,
    FLUSH_ACTOR: flush_playback,
    EDGE_LOG_ACTOR: ingest_edge_log,
    VIEWS_ACTOR: update_views,
}


# dramatiq runs the messages a worker holds lowest number first: a flush (small, and
# what heartbeats wait on to be stored) goes before the media stages queued with it.
PRIORITIES = {FLUSH_ACTOR: -10}


def declare_actors(broker: dramatiq.Broker) -> None:
    """Register our actors on `broker` (each broker gets its own Actor objects)."""
    for name, fn in ACTORS.items():
        if name not in broker.actors:
            dramatiq.Actor(
                fn,
                broker=broker,
                actor_name=name,
                queue_name=QUEUE_NAME,
                priority=PRIORITIES.get(name, 0),
                options={},
            )
