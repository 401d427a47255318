"""The package stage: HLS + DASH over one set of CMAF segments from ready renditions.

A video asset packages its ladder (the audio track taken from the top rung); an
audio-only asset packages its AAC ladder. The package id derives from the ladder,
so packaging twice rewrites the same keys under `keys.package_prefix`.
Files are written to a work directory first and only then stored, manifests last,
so a reader never finds a manifest naming a segment that is not stored yet.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from mediamill.config.settings import Settings
from mediamill.pipeline.packaging import Track, content_type, package_tracks
from mediamill.pipeline.quality import resolve
from mediamill.schemas import keys
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import MediaMillError, UnsupportedRenditionError
from mediamill.schemas.job_params import PackageParams
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.media import Asset
from mediamill.schemas.packages import (
    DASH_MANIFEST,
    MASTER_PLAYLIST,
    PackageStatus,
    package_id_for,
)
from mediamill.schemas.renditions import (
    Rendition,
    RenditionFormat,
    RenditionSpec,
    RenditionStatus,
)
from mediamill.storage import outbox, repo
from mediamill.storage.asset_jobs import active_jobs, lock_asset
from mediamill.storage.models import JobRow
from mediamill.workers import runtime
from mediamill.workers.middleware import owned_job
from mediamill.workers.queue import send_committed, time_limit_ms
from mediamill.workers.renditions import PlannedRendition, ladder_candidates

log = logging.getLogger(__name__)

_MANIFESTS = (MASTER_PLAYLIST, DASH_MANIFEST)


def planned_ladder(settings: Settings, asset: Asset) -> list[PlannedRendition]:
    """The renditions a package of `asset` carries, each resolved once: the video
    ladder for video, the AAC ladder for audio (rungs the original cannot support,
    or that resolve to the same rendition, left out)."""
    ladder: dict[str, PlannedRendition] = {}
    for spec in ladder_candidates(settings, asset):
        try:
            effective, notes = resolve(spec, asset, False)
        except UnsupportedRenditionError:
            continue
        ladder.setdefault(effective.spec_id, PlannedRendition(spec, effective, notes))
    return list(ladder.values())


def package_ladder(settings: Settings, asset: Asset) -> list[RenditionSpec]:
    """The effective specs of `planned_ladder`."""
    return [rung.effective for rung in planned_ladder(settings, asset)]


def plan_package(settings: Settings, job: JobRow, asset: Asset) -> None:
    """Hand `job` to the package stage (the caller enqueues after commit)."""
    repo.advance_job(job, JobStage.PACKAGE)
    params = repo.params_of(job)
    params.time_limit_ms = time_limit_ms(settings, (asset.duration_ms or 0) / 1000)
    repo.set_params(job, params)


def enqueue_package(
    rt: runtime.Runtime, asset_id: str, *, unless_active: bool = False
) -> str | None:
    """(Re-)package an asset's ready renditions in a job of its own; its job id.
    Packaging the same ladder again rewrites the same keys in place.

    `unless_active`: enqueue nothing (None) while an ingest or package job of the
    asset is queued or running (it packages the asset when it gets there), so any
    number of callers at once start at most one job."""
    with rt.db.session() as s:
        if unless_active:
            lock_asset(s, asset_id)
            if active_jobs(s, asset_id, (JobType.INGEST, JobType.PACKAGE)):
                return None
        asset = repo.asset_from_row(s, repo.get_asset_row(s, asset_id))
        job = repo.create_job(
            s, JobType.PACKAGE, JobStage.PACKAGE, PackageParams(), asset_id=asset_id
        )
        plan_package(rt.settings, job, asset)
    send_committed(rt, job)
    return job.id


def package(job_id: str) -> None:
    """Package the asset's ready ladder renditions; record the package and emit
    `package.ready`."""
    rt = runtime.current()
    with rt.db.session() as s:
        job = repo.get_job_row(s, job_id)
        asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id or ""))
        ready = {
            r.spec.spec_id: r
            for r in repo.list_renditions(s, asset.original_asset_id)
            if r.status is RenditionStatus.READY
        }
        ladder = [
            ready[spec.spec_id]
            for spec in package_ladder(rt.settings, asset)
            if spec.spec_id in ready
        ]
        time_limit_s = (repo.params_of(job).time_limit_ms or 600_000) / 1000
    if not ladder:
        with rt.db.session() as s:
            if (job := owned_job(s, job_id)) is not None:
                repo.finish_job(job, {"package": None})
        log.info("nothing to package for asset %s", asset.original_asset_id)
        return
    spec_ids = [r.spec.spec_id for r in ladder]
    package_id = package_id_for(spec_ids, rt.settings.package_segment_s)
    with rt.db.session() as s:
        if owned_job(s, job_id) is None:  # cancelled between the claim and here
            return
        row = repo.upsert_package(
            s,
            asset.original_asset_id,
            package_id,
            spec_ids,
            rt.settings.package_segment_s,
            job_id,
        )
        row.status = PackageStatus.RUNNING.value
    try:
        result = _package_and_store(rt, asset, ladder, package_id, time_limit_s * 0.95)
    except BaseException as exc:
        permanent = isinstance(exc, MediaMillError) and exc.permanent
        with rt.db.session() as s:
            if owned_job(s, job_id) is None:  # the cancel already settled the package row
                raise
            row = repo.get_package_row(s, asset.original_asset_id, package_id, for_update=True)
            row.status = (PackageStatus.FAILED if permanent else PackageStatus.QUEUED).value
            if permanent:
                row.error_name, row.error_message = exc.name, exc.message
            row.modified_at = utcnow()
        raise
    prefix = keys.package_prefix(asset.original_asset_id, package_id)
    with rt.db.session() as s:
        if (job := owned_job(s, job_id)) is None:
            return
        row = repo.get_package_row(s, asset.original_asset_id, package_id, for_update=True)
        row.status = PackageStatus.READY.value
        row.duration_ms, row.segment_count = result.duration_ms, result.segment_count
        row.size_bytes = result.size_bytes
        row.master_key = f"{prefix}/{MASTER_PLAYLIST}"
        row.manifest_key = f"{prefix}/{DASH_MANIFEST}"
        row.error_name = row.error_message = None
        row.modified_at = utcnow()
        outbox.add_event(s, "package.ready", {"package": repo.package_from_row(row).to_json_dict()})
        repo.finish_job(job, {"packageId": package_id})


def _package_and_store(
    rt: runtime.Runtime,
    asset: Asset,
    ladder: list[Rendition],
    package_id: str,
    timeout_s: float,
):
    frame_rate = asset.video.frame_rate if asset.video else None
    with ExitStack() as stack:
        paths = [stack.enter_context(rt.store.local_path(r.storage_key or "")) for r in ladder]
        tmp = Path(stack.enter_context(runtime.work_dir(rt.settings)))
        tracks = [
            Track(path, r.spec, min(frame_rate, 60.0) if frame_rate else None)
            for path, r in zip(paths, ladder, strict=True)
        ]
        if asset.video is not None:
            video = [t for t in tracks if t.spec.format is RenditionFormat.MP4]
            # Every rung carries the same AAC track (one copy serves all), or none.
            audio = video[:1] if asset.channels else []
        else:
            video, audio = [], tracks
        result = package_tracks(
            video,
            audio,
            tmp / "package",
            segment_s=rt.settings.package_segment_s,
            timeout_s=timeout_s,
        )
        prefix = keys.package_prefix(asset.original_asset_id, package_id)
        # Segments before manifests: a manifest never names a file not yet stored.
        for name in sorted(result.files, key=_store_order):
            with (tmp / "package" / name).open("rb") as f:
                rt.store.put(f"{prefix}/{name}", f, content_type=content_type(name))
        return result


def _store_order(name: str) -> tuple[bool, bool, str]:
    """Segments first, then media playlists, then the master and the MPD."""
    return (name.endswith((".m3u8", ".mpd")), name in _MANIFESTS, name)
