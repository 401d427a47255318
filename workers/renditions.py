"""Planning renditions: defaults after analysis, and the on-request path.

`request_rendition` is the one function the API calls for `?bitrate=&channels=&format=`:
it returns the ready rendition, or creates the rendition row and its job exactly
once (a unique (asset, spec) row decides the race between any number of
processes) and reports it not ready.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from mediamill.config.settings import Settings
from mediamill.pipeline.quality import resolve
from mediamill.schemas.errors import (
    ModelNotReadyError,
    UnsupportedRenditionError,
)
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.media import Asset, AssetStatus, VideoInfo
from mediamill.schemas.renditions import (
    Rendition,
    RenditionSpec,
    RenditionStatus,
    parse_audio_profile,
    parse_video_ladder,
)
from mediamill.storage import repo
from mediamill.storage.models import JobRow, RenditionRow
from mediamill.workers.queue import send_committed, time_limit_ms
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)


def default_specs(settings: Settings, asset: Asset) -> list[RenditionSpec]:
    """The automatic renditions for an asset: the video ladder (rungs above the
    original's height left out, never upscaled) or the audio profile."""
    if asset.video is not None:
        return [
            s
            for s in parse_video_ladder(settings.default_video_ladder)
            if s.height is not None and s.height <= asset.video.height
        ]
    return parse_audio_profile(settings.default_audio_renditions)


def check_requestable(spec: RenditionSpec) -> None:
    """Refuse up front (UnsupportedRenditionError) a spec no encoder delivers whatever
    the original: it is resolved against the most capable original there is (lossless
    stereo at the spec's own rate or 48 kHz; 4320p video), so only the limits that do
    not depend on the media can fire. The rest is decided after analysis."""
    video = VideoInfo(codec="h264", width=7680, height=4320) if spec.height is not None else None
    ideal = Asset(
        original_asset_id="0" * 64,
        size_bytes=0,
        codec="flac",
        channels=2,
        sample_rate_hz=spec.sample_rate_hz or 48000,
        video=video,
    )
    resolve(spec, ideal, exact=False)


def transcode_time_limit_ms(settings: Settings, asset: Asset, specs: list[RenditionSpec]) -> int:
    """Video encodes cost about real time each on a small machine; audio far less."""
    duration_s = (asset.duration_ms or 0) / 1000
    video_outputs = sum(1 for s in specs if s.height is not None)
    return time_limit_ms(settings, duration_s * (1 + video_outputs))


def add_renditions(
    session: Session, job: JobRow, asset: Asset, wanted: list[tuple[RenditionSpec, bool]]
) -> list[RenditionRow]:
    """Create the rendition rows `job` will produce, with one child job each.

    `wanted` holds (requested spec, exact). Specs that resolve to a rendition that
    already exists are someone else's (or done); unsupported ones are logged and
    skipped when they come from defaults (exact=False)."""
    created_rows = []
    for requested, exact in wanted:
        try:
            effective, notes = resolve(requested, asset, exact)
        except UnsupportedRenditionError:
            if exact:
                raise
            log.warning(
                "default rendition %s skipped for %s", requested.spec_id, asset.original_asset_id
            )
            continue
        row, created = repo.insert_rendition_if_absent(
            session, asset.original_asset_id, effective, requested, notes, job.id
        )
        if created:
            repo.create_job(
                session,
                JobType.RENDITION,
                JobStage.TRANSCODE,
                {"renditionId": row.id},
                asset_id=asset.original_asset_id,
                parent_id=job.id,
            )
            created_rows.append(row)
    return created_rows


def request_rendition(
    rt: Runtime, asset_id: str, requested: RenditionSpec, *, exact: bool
) -> Rendition:
    """The rendition of `asset_id` for `requested`: ready, or enqueued exactly once.

    Raises ModelNotFoundError (no such asset), ModelNotReadyError (asset not analysed
    yet), LowQualityError (exact and the original cannot support it),
    UnsupportedRenditionError. A returned rendition that is not `ready` is on its way.
    """
    send: JobRow | None = None
    with rt.db.session() as s:
        asset_row = repo.get_asset_row(s, asset_id)
        if asset_row.status != AssetStatus.ANALYSED.value:
            raise ModelNotReadyError(f"asset {asset_id} is not analysed yet", asset_id=asset_id)
        asset = repo.asset_from_row(s, asset_row)
        effective, _ = resolve(requested, asset, exact)
        try:
            existing = repo.get_rendition_row(s, asset_id, effective.spec_id)
        except Exception:
            existing = None
        if existing is not None:
            return repo.rendition_from_row(existing)
        job = repo.create_job(
            s,
            JobType.TRANSCODE,
            JobStage.TRANSCODE,
            {"timeLimitMs": transcode_time_limit_ms(rt.settings, asset, [effective])},
            asset_id=asset_id,
        )
        rows = add_renditions(s, job, asset, [(requested, exact)])
        if rows:
            send = job
            result = repo.rendition_from_row(rows[0])
        else:  # another process created it between our read and our insert
            s.delete(job)
            result = repo.rendition_from_row(repo.get_rendition_row(s, asset_id, effective.spec_id))
    if send is not None:
        send_committed(rt, send)
    return result


def is_ready(rendition: Rendition) -> bool:
    return rendition.status is RenditionStatus.READY
