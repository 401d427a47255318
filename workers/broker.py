"""get_broker(): the dramatiq broker with our middleware, in an order that matters."""

from __future__ import annotations

import functools
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Retries, ShutdownNotifications, TimeLimit

from mediamill.config.settings import Settings
from mediamill.storage.db import Database
from mediamill.workers.actors import declare_actors
from mediamill.workers.middleware import JobLifecycle, install_failure_log_filter, should_retry


def get_broker(settings: Settings, db: Database) -> dramatiq.Broker:
    """Redis or RabbitMQ when `MEDIAMILL_BROKER_URL` says so, else a `StubBroker`
    that an in-process worker drains (the embedded default).

    Middleware order: dramatiq runs `before_*` hooks in list order and `after_*`
    hooks in reverse. JobLifecycle sits after Retries, so after a failure it
    writes the job row (`queued` for a retry, `failed` otherwise, by the same
    predicate Retries uses) before Retries enqueues the retry: a fast retry can
    never find its job still `running` and skip itself. Its before hook claims
    the job before the actor starts. TimeLimit enforces the per-message limit
    that `workers/queue.py` scales with the media's duration.
    """
    install_failure_log_filter()
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.retry_min_backoff_ms,
            max_backoff=settings.retry_max_backoff_ms,
            retry_when=functools.partial(_retry_when, max_retries=settings.max_retries),
        ),
        JobLifecycle(
            db,
            lease_s=settings.job_lease_s,
            max_retries=settings.max_retries,
            max_lost_runs=settings.max_lost_runs,
        ),
    ]
    url = settings.broker_url
    if url is None:
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
    elif url.startswith(("redis://", "rediss://")):
        broker = RecoveringRedisBroker(
            url=url,
            middleware=middleware,
            heartbeat_timeout=int(settings.broker_heartbeat_timeout_s * 1000),
        )
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, middleware=middleware)
    declare_actors(broker)
    return broker


def _retry_when(retries: int, exc: BaseException, *, max_retries: int) -> bool:
    return should_retry(retries, exc, max_retries)


class RecoveringRedisBroker(RedisBroker):
    """dramatiq's RedisBroker, plus `requeue_dead_workers()` for the sweeper.

    A worker process that stopped polling Redis for `heartbeat_timeout` ms is dead to
    the broker, and the messages it had fetched go back on their queues, but only in
    the "maintenance" that dramatiq runs on one command in a thousand, at random. With
    few workers that can take minutes; the sweeper calls this every sweep instead, so a
    killed worker's messages wait the heartbeat timeout plus at most one sweep interval.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._maintain_now = threading.local()

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._maintain_now, "on", False):
            return 1
        return super()._should_do_maintenance(command)

    def requeue_dead_workers(self) -> None:
        """Run dramatiq's maintenance now on every declared queue (and delay queue):
        messages fetched by workers whose heartbeat is older than the timeout are
        pushed back. The command carrying it (`qsize`) only reads."""
        self._maintain_now.on = True
        try:
            for queue_name in sorted(self.get_declared_queues() | self.delay_queues):
                self.do_qsize(queue_name)
        finally:
            self._maintain_now.on = False
