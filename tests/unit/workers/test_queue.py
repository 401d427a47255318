"""workers/queue.py: every working stage has one actor on one queue; a stage message
carries the job id and the job row's time limit (scaled with the media's duration, up
to `max_duration_s`); a broker that refuses a committed job's message is logged, the
row is marked unsent for the sweeper, and nothing is raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from support import MakeRuntime, RefusingBroker, raw_job

from mediamill.config.settings import Settings
from mediamill.schemas.job_params import IngestParams, PathSource
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import repo
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow
from mediamill.workers.actors import declare_actors
from mediamill.workers.queue import (
    ACTOR_STAGES,
    QUEUE_NAME,
    STAGE_ACTORS,
    send_committed,
    send_stage,
    time_limit_ms,
)
from mediamill.workers.runtime import Runtime


@pytest.fixture
def rt(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime()


def _ingest_job(db: Database, time_limit: int | None = 4321) -> JobRow:
    params = IngestParams(source=PathSource(path="/media/a.flac"), time_limit_ms=time_limit)
    with db.session() as s:
        return repo.create_job(s, JobType.INGEST, JobStage.STORE, params)


def _messages(broker: StubBroker, queue_name: str = QUEUE_NAME) -> list[Message]:
    queue = broker.queues[queue_name]
    return [Message.decode(queue.get_nowait()) for _ in range(queue.qsize())]


def test_every_working_stage_has_one_declared_actor_on_the_queue() -> None:
    """Each stage but `done` maps to an actor that declare_actors puts on QUEUE_NAME."""
    assert set(STAGE_ACTORS) == {stage.value for stage in JobStage} - {JobStage.DONE.value}
    assert {ACTOR_STAGES[actor] for actor in STAGE_ACTORS.values()} == set(STAGE_ACTORS)
    broker = StubBroker()
    declare_actors(broker)
    for actor_name in STAGE_ACTORS.values():
        assert broker.get_actor(actor_name).queue_name == QUEUE_NAME
    broker.close()


def test_time_limit_is_base_plus_duration_capped_at_max_duration() -> None:
    """base + factor x duration, in ms; no duration gives the base, centuries the cap."""
    settings = Settings(
        _env_file=None, time_limit_base_s=10, time_limit_per_media_s=2, max_duration_s=100
    )
    assert time_limit_ms(settings, None) == 10_000
    assert time_limit_ms(settings, 0.0) == 10_000
    assert time_limit_ms(settings, 30.5) == 71_000
    assert time_limit_ms(settings, 3e9) == time_limit_ms(settings, 100) == 210_000


def test_a_negative_declared_duration_buys_no_less_than_the_base() -> None:
    """A lying header must not shrink the limit below the base (nor make it invalid)."""
    settings = Settings(_env_file=None, time_limit_base_s=10, time_limit_per_media_s=2)
    limit = time_limit_ms(settings, -1e9)
    assert limit == time_limit_ms(settings, None) == time_limit_ms(settings, float("nan"))
    assert limit == 10_000
    IngestParams(source=PathSource(path="/media/a.mkv"), time_limit_ms=limit)


def test_send_stage_enqueues_the_stage_actor_with_the_job_limit(rt: Runtime) -> None:
    """The message names the stage's actor, carries the job id and the row's time limit."""
    job = _ingest_job(rt.db)
    sent = send_stage(rt.broker, job)
    [message] = _messages(rt.broker)
    assert message.message_id == sent.message_id
    assert (message.queue_name, message.actor_name) == (QUEUE_NAME, "ingest")
    assert (tuple(message.args), message.kwargs) == ((job.id,), {})
    assert message.options["time_limit"] == 4321


def test_send_stage_with_a_delay_goes_to_the_delay_queue_keeping_the_limit(
    rt: Runtime,
) -> None:
    """A delayed message waits on the delay queue with an eta, its time limit kept."""
    job = _ingest_job(rt.db)
    send_stage(rt.broker, job, delay_ms=60_000)
    assert _messages(rt.broker) == []
    [message] = _messages(rt.broker, f"{QUEUE_NAME}.DQ")
    assert (message.actor_name, tuple(message.args)) == ("ingest", (job.id,))
    assert message.options["time_limit"] == 4321
    assert message.options["eta"] > 0


def test_send_stage_without_or_with_invalid_params_sends_no_time_limit(rt: Runtime) -> None:
    """No limit on the row, or params that do not validate: sent, dramatiq's default."""
    no_limit = _ingest_job(rt.db, time_limit=None)
    with rt.db.session() as s:
        invalid = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {"timeLimitMs": "soon"})
    send_stage(rt.broker, no_limit)
    send_stage(rt.broker, invalid)
    first, second = _messages(rt.broker)
    assert (first.actor_name, tuple(first.args)) == ("ingest", (no_limit.id,))
    assert (second.actor_name, tuple(second.args)) == ("transcode", (invalid.id,))
    assert "time_limit" not in first.options and "time_limit" not in second.options


def test_send_committed_sends_and_leaves_the_row_as_committed(rt: Runtime) -> None:
    """A send that works returns True; the row keeps its `enqueued_at`."""
    job = _ingest_job(rt.db)
    assert send_committed(rt, job) is True
    assert [tuple(m.args) for m in _messages(rt.broker)] == [(job.id,)]
    with rt.db.session() as s:
        row = repo.get_job_row(s, job.id)
    assert (row.status, row.enqueued_at) == ("queued", job.enqueued_at)


def test_send_committed_to_a_refusing_broker_marks_the_row_unsent(
    rt: Runtime, refusing_broker: RefusingBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker's error is logged, not raised; `enqueued_at` is cleared for the sweeper."""
    rt.broker = refusing_broker
    job = _ingest_job(rt.db)
    with caplog.at_level(logging.WARNING, logger="mediamill.workers.queue"):
        assert send_committed(rt, job) is False
    assert f"enqueue of job {job.id} failed; the sweeper will send it" in caplog.messages
    with rt.db.session() as s:
        row = repo.get_job_row(s, job.id)
    assert (row.status, row.enqueued_at) == ("queued", None)


def test_send_committed_with_broker_and_database_down_still_does_not_raise(
    rt: Runtime,
    refusing_broker: RefusingBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the broker's nor the database's error escapes; both are logged."""
    job = _ingest_job(rt.db)
    down = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'jobs.db'}")
    rt.broker, rt.db = refusing_broker, down
    with caplog.at_level(logging.WARNING, logger="mediamill.workers.queue"):
        assert send_committed(rt, job) is False
    assert f"could not mark job {job.id} unsent" in caplog.messages
    down.dispose()
