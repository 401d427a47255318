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

from mediamill.schemas import keys
from mediamill.schemas.base import utcnow
from mediamill.storage import repo
from mediamill.workers.edge_logs import sweep_edge_logs
from mediamill.workers.health import OutageLog, check_broker
from mediamill.workers.playback_flush import sweep_playback
from mediamill.workers.queue import STAGE_ACTORS, send_committed
from mediamill.workers.runtime import Runtime
from mediamill.workers.views import sweep_views

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
    try:  # what killed writers left in the store (never under a key)
        rt.store.remove_orphans(rt.settings.store_orphan_age_s, (keys.ORIGINALS,))
    except Exception:
        log.warning("removing orphaned temporary objects failed", exc_info=True)
    try:  # heartbeats and events nobody flushes; sessions that went quiet
        sweep_playback(rt)
    except Exception:
        log.warning("the playback sweep failed", exc_info=True)
    try:  # edge logs dropped into the store
        sweep_edge_logs(rt)
    except Exception:
        log.warning("the edge-log sweep failed", exc_info=True)
    try:  # views of what was flushed; rollups of the hours that closed
        sweep_views(rt)
    except Exception:
        log.warning("sending the views update failed", exc_info=True)
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
        send_committed(rt, row)  # a failure marks the row unsent: the next sweep tries again
    if rows:
        log.info("sweeper re-enqueued %d job(s)", len(rows))
    return len(rows)


class Sweeper(threading.Thread):
    """Runs `sweep` every `interval_s` until stopped.

    Each tick first checks the broker; while the broker or the database cannot be
    reached it only logs (see OutageLog). The first tick that works again sends every
    queued job, not only those queued for `requeue_after_s`: sends failed meanwhile (in
    actors, in the API), a claim that failed may have dead-lettered its message, and a
    broker restarted without its append-only file lost what it held. Duplicates are
    harmless (see above).
    """

    def __init__(
        self, rt: Runtime, interval_s: float, queued_older_than_s: float | None = None
    ) -> None:
        super().__init__(name="mediamill-sweeper", daemon=True)
        self.rt = rt
        self.interval_s = interval_s
        self.queued_older_than_s = queued_older_than_s
        self.stopped = threading.Event()
        self.outage = OutageLog(log, "sweep")

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.tick()

    def tick(self) -> int | None:
        """One sweep (after an outage: of every queued job). The number of jobs sent,
        or None when the broker or the database could not be reached."""
        try:
            check_broker(self.rt.broker)
            older_than_s = 0 if self.outage.failing else self.queued_older_than_s
            sent = sweep(self.rt, queued_older_than_s=older_than_s)
        except Exception as exc:
            self.outage.failed(exc)
            return None
        self.outage.succeeded()
        return sent

    def stop(self) -> None:
        self.stopped.set()
