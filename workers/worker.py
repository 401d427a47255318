"""Running a worker inside this process: for `mediamill worker`, `process` and `serve`."""

from __future__ import annotations

import logging

import dramatiq

from mediamill.workers.runtime import Runtime, set_current
from mediamill.workers.sweeper import Sweeper, sweep

log = logging.getLogger(__name__)


class InProcessWorker:
    """A dramatiq Worker plus the sweeper, consuming the runtime's broker."""

    def __init__(self, rt: Runtime, threads: int | None = None) -> None:
        self.rt = rt
        self.threads = threads or rt.settings.worker_threads
        self.worker: dramatiq.Worker | None = None
        self.sweeper: Sweeper | None = None

    def start(self) -> InProcessWorker:
        set_current(self.rt)
        # dramatiq's CLI emits process_boot; we run workers ourselves, so we do
        # (TimeLimit starts its watchdog thread on it).
        self.rt.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(
            self.rt.broker, worker_threads=self.threads, worker_timeout=200
        )
        self.worker.start()
        # The embedded StubBroker starts empty: whatever is queued in the DB was
        # enqueued by a process that is gone, so send it again now.
        if self.rt.settings.broker_url is None:
            sweep(self.rt, queued_older_than_s=0)
        self.sweeper = Sweeper(self.rt)
        self.sweeper.start()
        return self

    def stop(self, timeout_ms: int = 30_000) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.worker is not None:
            self.worker.stop(timeout=timeout_ms)
        self.rt.broker.close()

    def __enter__(self) -> InProcessWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
