"""Sending stage messages: one queue, one actor per job stage, limits from the job row."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq import Message

from mediamill.config.settings import Settings
from mediamill.schemas.errors import ModelInvalidError
from mediamill.schemas.jobs import JobStage
from mediamill.storage import repo
from mediamill.storage.models import JobRow
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

QUEUE_NAME = "mediamill"

# The actor that performs each stage of a job.
STAGE_ACTORS: dict[str, str] = {
    JobStage.STORE.value: "ingest",
    JobStage.ANALYSE.value: "analyse",
    JobStage.TRANSCODE.value: "transcode",
    JobStage.PACKAGE.value: "package",
}
ACTOR_STAGES = {actor: stage for stage, actor in STAGE_ACTORS.items()}


def time_limit_ms(settings: Settings, media_duration_s: float | None) -> int:
    """Wall-clock limit of one message: a base plus a factor of the media's duration.

    dramatiq's 10-minute default would kill the analysis of a long recording. The
    duration counts from 0 up to `max_duration_s`: a header declaring centuries (or a
    negative length) is refused by analysis, and must not buy the message a limit of
    centuries (or none at all) meanwhile.
    """
    declared_s = media_duration_s if media_duration_s and media_duration_s > 0 else 0.0
    media_s = min(declared_s, settings.max_duration_s)  # a negative or NaN header buys 0
    seconds = settings.time_limit_base_s + settings.time_limit_per_media_s * media_s
    return int(seconds * 1000)


def send_stage(broker: dramatiq.Broker, job: JobRow, *, delay_ms: int | None = None) -> Message:
    """Enqueue the message for the job's current stage (the row is committed first)."""
    actor_name = STAGE_ACTORS[job.stage]
    options: dict[str, object] = {}
    try:
        limit = repo.params_of(job).time_limit_ms
    except ModelInvalidError:  # sent anyway: the actor fails the job when it loads them
        limit = None
    if limit:
        options["time_limit"] = limit
    message = Message(
        queue_name=QUEUE_NAME,
        actor_name=actor_name,
        args=(job.id,),
        kwargs={},
        options=options,
    )
    return broker.enqueue(message, delay=delay_ms)


def send_committed(rt: Runtime, job: JobRow, *, delay_ms: int | None = None) -> bool:
    """`send_stage` for a job whose row is committed `queued`. A broker that refuses
    (Redis restarting, unreachable) is logged, not raised: the row is marked unsent, and
    the sweeper's next round sends it. False when the send failed."""
    try:
        send_stage(rt.broker, job, delay_ms=delay_ms)
    except Exception:
        log.warning("enqueue of job %s failed; the sweeper will send it", job.id, exc_info=True)
        try:
            with rt.db.session() as s:
                repo.mark_unsent(s, job)
        except Exception:  # the database is down too: sent after `requeue_after_s`
            log.warning("could not mark job %s unsent", job.id, exc_info=True)
        return False
    return True
