"""Running a worker inside this process: for `mediamill worker`, `process` and `serve`."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import dramatiq

from mediamill.schemas.base import utcnow
from mediamill.storage import workers as worker_rows
from mediamill.storage.blobs.base import SCRATCH_PREFIX
from mediamill.workers.health import OutageLog
from mediamill.workers.runtime import Runtime, set_current
from mediamill.workers.sweeper import Sweeper, sweep
from mediamill.workers.webhooks import Dispatcher

log = logging.getLogger(__name__)


def remove_orphaned_work_dirs(work_dir: Path) -> int:
    """Delete work directories whose worker process is gone (killed mid-stage).
    A live worker's directories, on this machine or sharing this disk, are kept."""
    removed = 0
    for path in work_dir.glob(f"{SCRATCH_PREFIX}*"):
        pid_text = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d work dir(s) left by dead workers", removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerHeartbeat(threading.Thread):
    """Keeps this worker's row in `workers` fresh every quarter of
    `MEDIAMILL_WORKER_STALE_S`, and removes it on a clean stop; rows of workers killed
    without one age out, and are dropped after ten times that."""

    def __init__(self, rt: Runtime, threads: int) -> None:
        super().__init__(name="mediamill-worker-heartbeat", daemon=True)
        self.rt, self.threads = rt, threads
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interval_s = rt.settings.worker_stale_s / 4
        self.stopped = threading.Event()
        self.outage = OutageLog(log, "worker heartbeat")

    def run(self) -> None:
        while True:
            self.beat()
            if self.stopped.wait(self.interval_s):
                return

    def beat(self) -> None:
        try:
            with self.rt.db.session() as s:
                worker_rows.beat(
                    s, self.worker_id, socket.gethostname(), os.getpid(), self.threads
                )
                stale = timedelta(seconds=10 * self.rt.settings.worker_stale_s)
                worker_rows.forget_stale(s, utcnow() - stale)
        except Exception as exc:  # an outage must not kill the heartbeat
            self.outage.failed(exc)
        else:
            self.outage.succeeded()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
        try:
            with self.rt.db.session() as s:
                worker_rows.remove(s, self.worker_id)
        except Exception:
            log.warning("could not remove worker row %s", self.worker_id, exc_info=True)


class InProcessWorker:
    """A dramatiq Worker plus the sweeper and the webhook dispatcher, consuming the
    runtime's broker."""

    # On the embedded StubBroker, a job queued by another process (`mediamill
    # ingest`) can only reach this worker through the sweeper, so look often.
    EMBEDDED_SWEEP_INTERVAL_S = 2.0
    EMBEDDED_QUEUED_AFTER_S = 10.0

    def __init__(self, rt: Runtime, threads: int | None = None, *, sweep: bool = True) -> None:
        self.rt = rt
        self.threads = threads or rt.settings.resolved_worker_threads
        self.sweep = sweep
        self.worker: dramatiq.Worker | None = None
        self.sweeper: Sweeper | None = None
        self.dispatcher: Dispatcher | None = None
        self.heartbeat: WorkerHeartbeat | None = None

    def start(self) -> InProcessWorker:
        set_current(self.rt)
        remove_orphaned_work_dirs(self.rt.settings.resolved_work_dir)
        # Children import while the worker boots; the pool grows to one per thread
        # as work comes (a short `mediamill process` does not start four).
        self.rt.native().start(min(2, self.threads))
        # dramatiq's CLI emits process_boot; we run workers ourselves, so we do
        # (TimeLimit starts its watchdog thread on it).
        self.rt.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(
            self.rt.broker, worker_threads=self.threads, worker_timeout=200
        )
        self.worker.start()
        self.heartbeat = WorkerHeartbeat(self.rt, self.threads)
        self.heartbeat.start()
        if not self.sweep:
            return self
        if self.rt.settings.broker_url is None:
            # The embedded StubBroker starts empty: whatever is queued in the DB was
            # enqueued by a process that is gone, so send it again now.
            sweep(self.rt, queued_older_than_s=0)
            self.sweeper = Sweeper(
                self.rt, self.EMBEDDED_SWEEP_INTERVAL_S, self.EMBEDDED_QUEUED_AFTER_S
            )
        else:
            self.sweeper = Sweeper(self.rt, self.rt.settings.sweep_interval_s)
        self.sweeper.start()
        self.dispatcher = Dispatcher(self.rt)
        self.dispatcher.start()
        return self

    def stop(self, timeout_ms: int = 30_000) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.worker is not None:
            self.worker.stop(timeout=timeout_ms)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.rt.close_native()
        self.rt.broker.close()

    def __enter__(self) -> InProcessWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
