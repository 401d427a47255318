"""`owned_job` (workers/middleware.py) on SQLite: the check that the running message
still owns its job holds the write lock until the caller's write commits, so a cancel
can never land between the two and be overwritten (SQLite ignores FOR UPDATE). The
same holds where JobLifecycle settles a failed message.
"""

from __future__ import annotations

import threading

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from support import raw_job

from mediamill.schemas.errors import ConflictError, CorruptMediaError
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import jobs_admin, repo
from mediamill.storage.db import Database
from mediamill.workers import middleware
from mediamill.workers.middleware import JobLifecycle, owned_job

MESSAGE_ID = "message-1"
# How long the interleaved cancel gets to commit while the worker holds its check.
CANCEL_WINDOW_S = 1.0


@pytest.fixture
def running_job(db: Database, monkeypatch: pytest.MonkeyPatch) -> str:
    """A transcode job claimed by MESSAGE_ID, which this thread runs as a worker would."""
    with db.session() as s:
        job_id = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}).id
    with db.session() as s:
        assert repo.claim_job(s, job_id, JobStage.TRANSCODE.value, MESSAGE_ID, 60.0)
    monkeypatch.setattr(middleware._current, "message_id", MESSAGE_ID, raising=False)
    return job_id


def _status(db: Database, job_id: str) -> str:
    with db.session() as s:
        return repo.get_job_row(s, job_id).status


def _canceller(db: Database, job_id: str, outcome: list[str]) -> threading.Thread:
    """A thread cancelling the job as POST /v0/jobs/{id}/cancel does; `outcome` gets
    "cancelled", or "refused" (409: the job had finished)."""

    def cancel() -> None:
        try:
            with db.session() as s:
                jobs_admin.cancel_job(s, job_id)
            outcome.append("cancelled")
        except ConflictError:
            outcome.append("refused")

    return threading.Thread(target=cancel)


def test_a_cancel_between_the_check_and_the_write_is_not_overwritten(
    db: Database, running_job: str
) -> None:
    """The worker checks ownership, an operator cancels, the worker writes `succeeded`.
    Either the cancel waits for the worker's write and is refused (409: the job had
    finished), or it wins and the job stays cancelled: never a cancel that answered
    "cancelled" and a job that ends `succeeded`."""
    outcome: list[str] = []
    canceller = _canceller(db, running_job, outcome)
    with db.session() as s:
        job = owned_job(s, running_job)
        assert job is not None
        canceller.start()
        canceller.join(timeout=CANCEL_WINDOW_S)  # it lands here unless the check locks
        repo.finish_job(job, {"renditions": 1})
    canceller.join(timeout=60)
    assert not canceller.is_alive()
    final = _status(db, running_job)
    assert outcome == ["refused"] and final == "succeeded", (outcome, final)


def test_a_cancel_before_the_check_leaves_the_worker_nothing_to_write(
    db: Database, running_job: str
) -> None:
    with db.session() as s:
        jobs_admin.cancel_job(s, running_job)
    with db.session() as s:
        assert owned_job(s, running_job) is None
    assert _status(db, running_job) == "cancelled"


def test_only_the_claiming_message_owns_the_job(
    db: Database, running_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(middleware._current, "message_id", "message-2")
    with db.session() as s:
        assert owned_job(s, running_job) is None  # taken over: not this message's
    monkeypatch.setattr(middleware._current, "message_id", None)
    with db.session() as s:
        stale = repo.get_job_row(s, running_job)  # a copy loaded before the check
        owned = owned_job(s, running_job)  # outside a worker: any running job
        assert owned is stale and owned.message_id == MESSAGE_ID
    with db.session() as s:
        assert owned_job(s, "no-such-job") is None


def test_a_cancel_while_a_failure_is_settled_is_not_overwritten(
    db: Database, running_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JobLifecycle records a permanent failure; a cancel interleaved right before its
    write (monkeypatched in) must not be turned into `failed` after answering."""
    outcome: list[str] = []
    canceller = _canceller(db, running_job, outcome)
    fail_job = repo.fail_job

    def interleaved(session, row, error) -> None:  # type: ignore[no-untyped-def]
        canceller.start()
        canceller.join(timeout=CANCEL_WINDOW_S)
        fail_job(session, row, error)

    monkeypatch.setattr(repo, "fail_job", interleaved)
    lifecycle = JobLifecycle(db, lease_s=60.0, max_retries=0)
    lifecycle._active[MESSAGE_ID] = running_job
    message = dramatiq.Message(
        queue_name="mediamill",
        actor_name="transcode",
        args=(running_job,),
        kwargs={},
        options={},
        message_id=MESSAGE_ID,
    )
    lifecycle.after_process_message(StubBroker(), message, exception=CorruptMediaError("bad bytes"))
    canceller.join(timeout=60)
    assert not canceller.is_alive()
    final = _status(db, running_job)
    assert outcome == ["refused"] and final == "failed", (outcome, final)


def test_named_failures_are_one_line_and_our_bugs_keep_their_traceback(caplog) -> None:
    """dramatiq's traceback for a named error and its "Retries exceeded" are dropped;
    the job's own line says it once (INFO for bad media); a bug keeps its traceback."""
    import logging

    from mediamill.schemas.errors import CorruptMediaError, ProcessingTimeoutError
    from mediamill.workers.middleware import failure_line, install_failure_log_filter

    install_failure_log_filter()
    install_failure_log_filter()  # idempotent
    worker_log = logging.getLogger("dramatiq.worker.WorkerThread")
    retries_log = logging.getLogger("dramatiq.middleware.retries.Retries")
    assert len([f for f in worker_log.filters if type(f).__name__ == "FailureLogFilter"]) == 1
    with caplog.at_level(logging.INFO):
        for exc in (CorruptMediaError("bad bytes"), KeyError("our bug")):
            try:
                raise exc
            except Exception:
                worker_log.error("Failed to process message %s with unhandled exception.", "m",
                                 exc_info=True)  # fmt: skip
        retries_log.warning("Retries exceeded for message %r.", "m")
        retries_log.info("Retrying message %r in %d milliseconds.", "m", 5)
        failure_line("job-1", CorruptMediaError("bad bytes"), retrying=False)
        failure_line("job-2", ProcessingTimeoutError("too slow"), retrying=False)
    records = [(r.name, r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert records == [
        ("dramatiq.worker.WorkerThread", "ERROR",
         "Failed to process message m with unhandled exception.", True),
        ("dramatiq.middleware.retries.Retries", "INFO", "Retrying message 'm' in 5 milliseconds.",
         False),
        ("mediamill.workers.middleware", "INFO", "job job-1 failed: CorruptMediaError: bad bytes",
         False),
        ("mediamill.workers.middleware", "WARNING",
         "job job-2 failed: ProcessingTimeoutError: too slow", False),
    ]  # fmt: skip
