"""JobLifecycle: keeps job rows in step with the messages that work on them.

Before a message runs it claims its job (skipping duplicates and stale
messages); while it runs a heartbeat keeps the claim fresh; after it runs,
failures land on the job row: `queued` again when a retry is due, `failed`
(with a `job.failed` outbox event) when not. The row is written before Retries
enqueues the retry, so the retry always finds its job claimable.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    InvalidRequestError,
    LimitExceededError,
    LowQualityError,
    MediaError,
    MediaMillError,
    ModelNotFoundError,
    ProcessingTimeoutError,
    TransientError,
    WorkerCrashedError,
)
from mediamill.schemas.jobs import JobStatus
from mediamill.storage import repo
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow
from mediamill.workers.health import OutageLog
from mediamill.workers.queue import ACTOR_STAGES

log = logging.getLogger(__name__)

# The message each worker thread is working on (set once it holds its job's claim).
_current = threading.local()
# Failures that are the input's, not ours: bad media, refused requests, limits. One
# INFO line each; a crash is WorkerCrashedError, a MediaError, but worth a WARNING.
INPUT_FAILURES = (MediaError, InvalidRequestError, LimitExceededError, LowQualityError,
                  ModelNotFoundError)  # fmt: skip


class FailureLogFilter(logging.Filter):
    """dramatiq logs every exception an actor raises with its traceback ("Failed to
    process message ... with unhandled exception", ERROR) and every failure it does not
    retry as "Retries exceeded". For our named errors JobLifecycle says it once, in one
    line (`failure_line`); tracebacks stay for everything else: our own bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("dramatiq.middleware.retries"):
            return not str(record.msg).startswith("Retries exceeded")
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, MediaMillError)


_FILTER = FailureLogFilter()


def install_failure_log_filter() -> None:
    """Attach `FailureLogFilter` to dramatiq's worker and Retries loggers (idempotent)."""
    for name in ("dramatiq.worker.WorkerThread", "dramatiq.middleware.retries.Retries"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def failure_line(job_id: str, error: MediaMillError, retrying: bool) -> None:
    """The one log line of a failed stage: INFO for the input's faults, WARNING else."""
    if retrying:
        log.warning("job %s: %s: %s; retrying", job_id, error.name, error.message)
        return
    level = logging.INFO if isinstance(error, INPUT_FAILURES) else logging.WARNING
    if isinstance(error, WorkerCrashedError):
        level = logging.WARNING
    log.log(level, "job %s failed: %s: %s", job_id, error.name, error.message)


class ClaimError(MiddlewareError):
    """A job could not be claimed because the database did not answer. A MiddlewareError,
    because dramatiq logs and ignores any other error of a `before_process_message` hook
    and runs the actor anyway: unclaimed, it could work on a job another message holds.
    This one fails the message instead, and Retries sends it again with backoff."""


def current_message_id() -> str | None:
    """The id of the message this thread's actor runs for, if it runs under a worker."""
    return getattr(_current, "message_id", None)


def owned_job(session: Session, job_id: str) -> JobRow | None:
    """The job row, locked, while the running message still owns it; None once it was
    cancelled, or claimed by another message after this one's lease lapsed. Every
    write that moves a job on goes through here, so a cancelled job stays cancelled
    whatever its worker does after the cancel.

    The check is one conditional UPDATE (it also touches `updated_at`, a heartbeat),
    not a read: it takes the row's lock on PostgreSQL and the database's write lock on
    SQLite (which ignores SELECT ... FOR UPDATE) before it decides, so a cancel cannot
    commit between this check and the caller's write and then be overwritten.
    """
    message_id = current_message_id()
    if message_id is None:  # not under a worker: any running job
        return _lock_running(session, job_id)
    # Not taken over by another message since.
    return _lock_running(
        session, job_id, or_(JobRow.message_id.is_(None), JobRow.message_id == message_id)
    )


def _lock_running(session: Session, job_id: str, *owner: ColumnElement[bool]) -> JobRow | None:
    """The job row if it is running (and `owner` holds), locked until the transaction
    ends; else None. One conditional UPDATE decides (see owned_job)."""
    changed = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value, *owner)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return None
    # Read under the lock; refresh a copy this session may hold from before it.
    return session.scalars(
        select(JobRow).where(JobRow.id == job_id).execution_options(populate_existing=True)
    ).one()


def as_mediamill_error(exc: BaseException) -> MediaMillError:
    """Our error for any exception an actor raised."""
    if isinstance(exc, MediaMillError):
        return exc
    if isinstance(exc, TimeLimitExceeded):
        return ProcessingTimeoutError("the stage ran past its time limit")
    return TransientError(f"{type(exc).__name__}: {exc}")


def should_retry(retries_so_far: int, exc: BaseException, max_retries: int) -> bool:
    """Transient errors are retried (with backoff) up to `max_retries`; permanent never."""
    return not as_mediamill_error(exc).permanent and retries_so_far < max_retries


class JobLifecycle(Middleware):
    """Claims, heartbeats and settles the job row behind each message."""

    def __init__(
        self, db: Database, lease_s: float, max_retries: int, max_lost_runs: int = 2
    ) -> None:
        self.db = db
        self.lease_s = lease_s
        self.max_retries = max_retries
        self.max_lost_runs = max_lost_runs
        self._active: dict[str, str] = {}  # message id -> job id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self._heart_outage = OutageLog(log, "heartbeat")

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._heart = threading.Thread(target=self._beat, name="mediamill-heartbeat", daemon=True)
        self._heart.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with self._lock:
                job_ids = list(self._active.values())
            try:
                with self.db.session() as s:
                    repo.touch_jobs(s, job_ids)
            except Exception as exc:  # a DB outage must not kill the heartbeat thread
                self._heart_outage.failed(exc)
            else:
                self._heart_outage.succeeded()

    def _lost_too_often(self, s: Session, job_id: str, stage: str) -> bool:
        """A job whose stage lost its worker more than `max_lost_runs` times fails here
        instead of running again: whatever kills whole workers (memory, native code
        outside the children) must not go round the fleet for ever."""
        row = repo.get_job_row(s, job_id)
        if row.lost_runs <= self.max_lost_runs:
            return False
        error = WorkerCrashedError(
            f"the {stage} stage lost its worker {row.lost_runs} times (no heartbeat within "
            f"the lease; MEDIAMILL_MAX_LOST_RUNS={self.max_lost_runs})",
            stage=stage,
        )
        log.error("job %s: %s", job_id, error.message)
        repo.fail_lost_job(s, row, error)
        return True

    @staticmethod
    def _job_id(message: dramatiq.Message) -> str | None:
        if message.actor_name not in ACTOR_STAGES or not message.args:
            return None
        return str(message.args[0])

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        job_id = self._job_id(message)
        if job_id is None:
            return
        stage = ACTOR_STAGES[message.actor_name]
        try:
            with self.db.session() as s:
                claimed = repo.claim_job(s, job_id, stage, message.message_id, self.lease_s)
                if claimed and self._lost_too_often(s, job_id, stage):
                    claimed = False
        except Exception as exc:
            raise ClaimError(f"job {job_id} could not be claimed: {exc}") from exc
        if not claimed:
            log.info(
                "skipping %s for job %s: not claimable in stage %s",
                message.actor_name,
                job_id,
                stage,
            )
            raise SkipMessage()
        with self._lock:
            self._active[message.message_id] = job_id
        _current.message_id = message.message_id

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            job_id = self._active.pop(message.message_id, None)
        _current.message_id = None
        if job_id is None or exception is None:
            return
        error = as_mediamill_error(exception)
        # This hook runs before Retries' (see workers/broker.py), so the row says
        # `queued` before the retry message can arrive and try to claim it. The
        # decision is the same predicate Retries applies next.
        retrying = should_retry(message.options.get("retries", 0), exception, self.max_retries)
        failure_line(job_id, error, retrying)
        try:
            with self.db.session() as s:
                # Locked as owned_job does, so a cancel cannot slip in before the write.
                row = _lock_running(s, job_id, JobRow.message_id == message.message_id)
                if row is None:
                    return  # finished or cancelled already, or taken over by another message
                if retrying:
                    repo.requeue_job(row, error)
                else:
                    repo.fail_job(s, row, error)
        except Exception:
            # The database is unreachable (often the very error the actor died of): the
            # row stays `running` under this message, a retry of it is skipped, and once
            # the lease lapses the sweeper sends the job again.
            log.warning(
                "could not record that job %s failed (%s); it runs again once its lease lapses",
                job_id,
                error.name,
                exc_info=True,
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        with self._lock:
            self._active.pop(message.message_id, None)
        _current.message_id = None
