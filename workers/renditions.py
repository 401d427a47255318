"""Planning renditions: defaults after analysis, and the on-request path.

`request_rendition` is the one function the API calls for `?bitrate=&channels=&format=`:
it returns the ready rendition, or creates the rendition row and its job exactly
once (a unique (asset, spec) row decides the race between any number of
processes) and reports it not ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mediamill.config.settings import Settings
from mediamill.pipeline.quality import resolve
from mediamill.schemas.errors import (
    ModelNotReadyError,
    UnsupportedRenditionError,
)
from mediamill.schemas.job_params import RenditionJobParams, RenditionPlan, TranscodeParams
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
    original's height left out, never upscaled) or the audio profile. A video below
    every rung gets one rung at its own height (made even) at the smallest rung's
    bitrate, so it is never an asset with nothing to play."""
    if asset.video is not None:
        ladder = parse_video_ladder(settings.default_video_ladder)
        fitting = [s for s in ladder if s.height is not None and s.height <= asset.video.height]
        if fitting or not ladder:
            return fitting
        smallest = min(ladder, key=lambda s: s.height or 0)
        own_height = asset.video.height - asset.video.height % 2
        return [smallest.model_copy(update={"height": own_height})]
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


@dataclass(frozen=True)
class PlannedRendition:
    """One rendition to make: the spec asked for, what the asset gives for it
    (resolved once), and what resolving changed and why."""

    requested: RenditionSpec
    effective: RenditionSpec
    notes: list[str]


def plan_renditions(
    settings: Settings, plan: RenditionPlan, asset: Asset
) -> tuple[list[PlannedRendition], list[RenditionSpec]]:
    """Resolve a job's plan against its analysed asset, each distinct spec once: the
    renditions to make (those asked for, the defaults unless left out, the package
    ladder unless no package) and the package ladder (effective specs). A rendition
    asked for that the asset cannot give raises (UnsupportedRenditionError, or
    LowQualityError under `exact`); defaults and ladder rungs that do not apply are
    logged and skipped."""
    planned: list[PlannedRendition] = []
    resolved: dict[str, tuple[RenditionSpec, list[str]] | None] = {}
    made: set[str] = set()

    def resolve_once(
        spec: RenditionSpec, exact: bool, asked: bool
    ) -> tuple[RenditionSpec, list[str]] | None:
        if spec.spec_id not in resolved:
            try:
                resolved[spec.spec_id] = resolve(spec, asset, exact)
            except UnsupportedRenditionError as exc:
                if asked:
                    raise
                log.info(
                    "default rendition %s skipped for %s: %s",
                    spec.spec_id,
                    asset.original_asset_id,
                    exc.message,
                )
                resolved[spec.spec_id] = None
        return resolved[spec.spec_id]

    def add(spec: RenditionSpec, exact: bool, asked: bool) -> None:
        if spec.spec_id in made:
            return
        made.add(spec.spec_id)
        if (result := resolve_once(spec, exact, asked)) is not None:
            planned.append(PlannedRendition(spec, *result))

    for spec in plan.renditions:
        add(spec, plan.exact, True)
    if plan.defaults:
        for spec in default_specs(settings, asset):
            add(spec, False, False)
    ladder: dict[str, RenditionSpec] = {}
    for spec in ladder_candidates(settings, asset) if plan.package else []:
        if (result := resolve_once(spec, False, False)) is not None:
            ladder.setdefault(result[0].spec_id, result[0])
    for effective in ladder.values():  # a rung is its own request: nothing to change
        if effective.spec_id not in made:
            made.add(effective.spec_id)
            planned.append(PlannedRendition(effective, effective, []))
    return planned, list(ladder.values())


def ladder_candidates(settings: Settings, asset: Asset) -> list[RenditionSpec]:
    """The specs a package of `asset` is made from, before resolving: the video ladder
    for video, the AAC ladder for audio."""
    if asset.video is not None:
        return default_specs(settings, asset)
    return parse_audio_profile(settings.package_audio_ladder)


def add_renditions(
    session: Session, job: JobRow, asset: Asset, planned: list[PlannedRendition]
) -> list[RenditionRow]:
    """Create the rendition rows `job` will produce, with one child job each. A planned
    rendition that already exists (same effective spec) is someone else's, or done."""
    created_rows = []
    for item in planned:
        row, created = repo.insert_rendition_if_absent(
            session, asset.original_asset_id, item.effective, item.requested, item.notes, job.id
        )
        if created:
            repo.create_job(
                session,
                JobType.RENDITION,
                JobStage.TRANSCODE,
                RenditionJobParams(rendition_id=row.id),
                asset_id=asset.original_asset_id,
                parent_id=job.id,
            )
            created_rows.append(row)
    return created_rows


def request_rendition(
    rt: Runtime,
    asset_id: str,
    requested: RenditionSpec,
    *,
    exact: bool,
    offered: tuple[int, ...] | None = None,
) -> Rendition:
    """The rendition of `asset_id` for `requested`: ready, or enqueued exactly once.

    Raises ModelNotFoundError (no such asset), ModelNotReadyError (asset not analysed
    yet), LowQualityError (exact and the original cannot support it),
    UnsupportedRenditionError. A returned rendition that is not `ready` is on its way.
    """

    def planned(asset: Asset) -> PlannedRendition:
        return PlannedRendition(requested, *resolve(requested, asset, exact, offered=offered))

    return _request(rt, asset_id, planned)


def request_planned(rt: Runtime, asset_id: str, rung: PlannedRendition) -> Rendition:
    """`request_rendition` for a rendition already resolved against this analysed
    asset (a package rung of `packages.planned_ladder`): not resolved again."""
    return _request(rt, asset_id, lambda _asset: rung)


def _request(rt: Runtime, asset_id: str, plan: Callable[[Asset], PlannedRendition]) -> Rendition:
    send: JobRow | None = None
    with rt.db.session() as s:
        asset_row = repo.get_asset_row(s, asset_id)
        if asset_row.status != AssetStatus.ANALYSED.value:
            raise ModelNotReadyError(f"asset {asset_id} is not analysed yet", asset_id=asset_id)
        asset = repo.asset_from_row(s, asset_row)
        rendition = plan(asset)
        effective = rendition.effective
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
            TranscodeParams(time_limit_ms=transcode_time_limit_ms(rt.settings, asset, [effective])),
            asset_id=asset_id,
        )
        rows = add_renditions(s, job, asset, [rendition])
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
