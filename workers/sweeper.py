"""The sweeper: the database is the source of truth, so lost messages are re-sent.

A job row is written before its message; if the enqueue failed, the broker lost
the message, or a worker died mid-run without the broker redelivering, the row
is still there and the sweeper sends its stage's message again. Duplicates are
harmless: JobLifecycle lets only one message claim a job.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from mediamill.schemas.base import utcnow
from mediamill.storage import repo
from mediamill.workers.queue import STAGE_ACTORS, send_stage
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)


def sweep(rt: Runtime, *, queued_older_than_s: float | None = None) -> int:
    """Re-send messages for jobs stuck in `queued` or orphaned in `running`. Returns the count.

    On Redis, first push the messages of dead workers back on the queue (see
    RecoveringRedisBroker): a killed worker's prefetched messages then run again after
    the broker heartbeat timeout, without waiting for `requeue_after_s`.
    """
    requeue_dead_workers = getattr(rt.broker, "requeue_dead_workers", None)
    if requeue_dead_workers is not None:
        try:
            requeue_dead_workers()
        except Exception:
            log.warning("requeue of dead workers' messages failed", exc_info=True)
    now = utcnow()
    queued_age = rt.settings.requeue_after_s if queued_older_than_s is None else queued_older_than_s
    with rt.db.session() as s:
        found = repo.jobs_to_resweep(
            s,
            queued_before=now - timedelta(seconds=queued_age),
            running_before=now - timedelta(seconds=rt.settings.job_lease_s),
        )
        rows = [r for r in found if r.stage in STAGE_ACTORS]
    resend = []
    for row in rows:
        with rt.db.session() as s:
            if repo.requeue_if_unchanged(s, row):
                resend.append(repo.get_job_row(s, row.id))
    rows = resend
    for row in rows:
        try:
            send_stage(rt.broker, row)
        except Exception:
            log.warning("re-enqueue of job %s failed; will try again", row.id, exc_info=True)
    if rows:
        log.info("sweeper re-enqueued %d job(s)", len(rows))
    return len(rows)


class Sweeper(threading.Thread):
    """Runs `sweep` every `interval_s` until stopped."""

    def __init__(
        self, rt: Runtime, interval_s: float, queued_older_than_s: float | None = None
    ) -> None:
        super().__init__(name="mediamill-sweeper", daemon=True)
        self.rt = rt
        self.interval_s = interval_s
        self.queued_older_than_s = queued_older_than_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                sweep(self.rt, queued_older_than_s=self.queued_older_than_s)
            except Exception:
                log.warning("sweep failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
