"""A job whose worker keeps dying (lease lapsed) runs again at most `max_lost_runs`
times per stage, then fails with WorkerCrashedError: a message that kills whole workers
cannot go round the fleet for ever. The asset is not condemned (a lapsed lease is no
proof against the bytes) but left `stored`, not stuck `analysing`."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import SkipMessage
from sqlalchemy import update
from support import raw_job

from mediamill.schemas.base import utcnow
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import outbox, repo
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow
from mediamill.workers.middleware import JobLifecycle

LEASE_S = 60.0
ASSET_ID = "a" * 64


def _analysing_job(db: Database) -> str:
    with db.session() as s:
        repo.insert_asset_if_absent(s, ASSET_ID, f"originals/{ASSET_ID}", 10, None)
        job = raw_job(s, JobType.INGEST, JobStage.ANALYSE, {}, asset_id=ASSET_ID)
        return job.id


def _lapse(db: Database, job_id: str) -> None:
    """The worker running the job died: its heartbeat stopped a lease ago."""
    with db.session() as s:
        s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(updated_at=utcnow() - timedelta(seconds=LEASE_S + 1))
        )


def _message(job_id: str, n: int) -> dramatiq.Message:
    return dramatiq.Message(
        queue_name="mediamill",
        actor_name="analyse",
        args=(job_id,),
        kwargs={},
        options={},
        message_id=f"message-{n}",
    )


def _row(db: Database, job_id: str) -> JobRow:
    with db.session() as s:
        row = repo.get_job_row(s, job_id)
        s.expunge(row)
        return row


def test_lost_runs_are_counted_by_takeover_and_by_the_sweeper(db: Database) -> None:
    job_id = _analysing_job(db)
    with db.session() as s:
        assert repo.claim_job(s, job_id, "analyse", "m1", LEASE_S)
    assert _row(db, job_id).lost_runs == 0
    _lapse(db, job_id)
    with db.session() as s:  # a redelivered message takes the orphaned run over
        assert repo.claim_job(s, job_id, "analyse", "m2", LEASE_S)
    assert _row(db, job_id).lost_runs == 1
    _lapse(db, job_id)
    with db.session() as s:  # the sweeper finds it orphaned and queues it again
        assert repo.requeue_if_unchanged(s, repo.get_job_row(s, job_id))
    with db.session() as s:  # claimed from `queued`: no second count for the same loss
        assert repo.claim_job(s, job_id, "analyse", "m3", LEASE_S)
    row = _row(db, job_id)
    assert (row.lost_runs, row.attempts) == (2, 3)
    with db.session() as s:
        repo.advance_job(repo.get_job_row(s, job_id), JobStage.TRANSCODE)
    assert _row(db, job_id).lost_runs == 0  # counted per stage


def test_the_run_after_too_many_losses_fails_the_job(db: Database) -> None:
    job_id = _analysing_job(db)
    with db.session() as s:
        assert repo.claim_asset_analysis(s, ASSET_ID, LEASE_S)
    lifecycle = JobLifecycle(db, lease_s=LEASE_S, max_retries=5, max_lost_runs=1)
    broker = StubBroker()
    lifecycle.before_process_message(broker, _message(job_id, 1))
    lifecycle.after_skip_message(broker, _message(job_id, 1))  # the worker "dies" here
    _lapse(db, job_id)
    lifecycle.before_process_message(broker, _message(job_id, 2))  # 1 loss: runs again
    lifecycle.after_skip_message(broker, _message(job_id, 2))
    _lapse(db, job_id)
    with pytest.raises(SkipMessage):
        lifecycle.before_process_message(broker, _message(job_id, 3))
    row = _row(db, job_id)
    assert row.status == "failed" and row.error_name == "WorkerCrashedError"
    assert "lost its worker 2 times" in row.error_message
    with db.session() as s:
        asset = repo.get_asset_row(s, ASSET_ID)
        assert (asset.status, asset.error_name) == ("stored", None)
        (event,) = outbox.list_events(s, "job.failed")
    assert event.data["job"]["id"] == job_id
    assert event.data["job"]["error"]["name"] == "WorkerCrashedError"
