"""workers/sweeper.py: the database is the source of truth. A job queued too long (or
never sent) and a running job whose heartbeat stopped are put back to `queued` and
their stage's message is sent again; a fresh job, a finished one and a worker's fresh
claim are left alone; after an outage the first sweep sends every queued job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dramatiq import Message
from sqlalchemy import update
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.schemas.base import utcnow
from mediamill.schemas.job_params import IngestParams, PathSource
from mediamill.schemas.jobs import JobStage, JobStatus, JobType
from mediamill.storage import repo
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime
from mediamill.workers.sweeper import Sweeper, sweep


@pytest.fixture
def rt(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime(Settings(_env_file=None, requeue_after_s=60, job_lease_s=30))


def _job(rt: Runtime, *, status: str, age_s: float, enqueued: bool = True) -> str:
    """An ingest job in `status`, last touched (and sent, if `enqueued`) `age_s` ago."""
    with rt.db.session() as s:
        job = repo.create_job(
            s, JobType.INGEST, JobStage.STORE, IngestParams(source=PathSource(path="/m/a.flac"))
        )
        then = utcnow() - timedelta(seconds=age_s)
        s.execute(
            update(JobRow)
            .where(JobRow.id == job.id)
            .values(status=status, updated_at=then, enqueued_at=then if enqueued else None)
        )
        return job.id


def _sent(rt: Runtime) -> list[tuple[str, tuple]]:
    queue = rt.broker.queues[QUEUE_NAME]
    messages = [Message.decode(queue.get_nowait()) for _ in range(queue.qsize())]
    return [(m.actor_name, tuple(m.args)) for m in messages]


def _row(rt: Runtime, job_id: str) -> JobRow:
    with rt.db.session() as s:
        return repo.get_job_row(s, job_id)


def test_lost_messages_are_sent_again_and_fresh_ones_left_alone(rt: Runtime) -> None:
    stale = _job(rt, status=JobStatus.QUEUED.value, age_s=120)
    unsent = _job(rt, status=JobStatus.QUEUED.value, age_s=1, enqueued=False)
    fresh = _job(rt, status=JobStatus.QUEUED.value, age_s=1)
    done = _job(rt, status=JobStatus.SUCCEEDED.value, age_s=3600)
    assert sweep(rt) == 2
    assert sorted(_sent(rt)) == sorted([("ingest", (stale,)), ("ingest", (unsent,))])
    assert _row(rt, unsent).enqueued_at is not None
    assert _row(rt, fresh).status == JobStatus.QUEUED.value
    assert _row(rt, done).status == JobStatus.SUCCEEDED.value
    assert sweep(rt) == 0  # just re-sent: no longer stale


def test_a_running_job_whose_heartbeat_stopped_runs_again(rt: Runtime) -> None:
    orphan = _job(rt, status=JobStatus.RUNNING.value, age_s=45)
    alive = _job(rt, status=JobStatus.RUNNING.value, age_s=5)
    assert sweep(rt) == 1
    assert _sent(rt) == [("ingest", (orphan,))]
    row = _row(rt, orphan)
    assert (row.status, row.lost_runs) == (JobStatus.QUEUED.value, 1)
    assert _row(rt, alive).status == JobStatus.RUNNING.value


def test_queued_older_than_zero_sends_every_queued_job(rt: Runtime) -> None:
    ids = {_job(rt, status=JobStatus.QUEUED.value, age_s=1) for _ in range(3)}
    assert sweep(rt) == 0
    assert sweep(rt, queued_older_than_s=0) == 3
    assert {args[0] for _, args in _sent(rt)} == ids


def test_after_an_outage_the_first_tick_sends_every_queued_job(rt: Runtime, tmp_path: Path) -> None:
    job_id = _job(rt, status=JobStatus.QUEUED.value, age_s=1)
    sweeper = Sweeper(rt, interval_s=3600)
    assert sweeper.tick() == 0  # queued a second ago: not lost yet
    healthy = rt.db
    rt.db = Database(f"sqlite:///{tmp_path / 'missing' / 'jobs.db'}")  # cannot be opened
    try:
        assert sweeper.tick() is None and sweeper.outage.failing
    finally:
        rt.db.dispose()
        rt.db = healthy
    assert sweeper.tick() == 1 and not sweeper.outage.failing
    assert _sent(rt) == [("ingest", (job_id,))]


def test_a_marked_session_makes_the_sweep_send_a_views_update(rt: Runtime) -> None:
    """What makes a view visible within a sweep interval of its records' flush."""
    from mediamill.storage import views as view_rows

    sweep(rt)
    assert [name for name, _ in _sent(rt)] == []  # nothing to update: nothing sent
    with rt.db.session() as s:
        view_rows.mark_sessions(s, ["some-session"], utcnow())
    sweep(rt)
    assert [name for name, _ in _sent(rt)] == ["update_views"]
