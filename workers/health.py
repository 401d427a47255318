"""Broker health and queue depth, for /ready and /metrics. One function per broker
kind, so the API never reaches into dramatiq's internals itself. And OutageLog, how
background loops (sweeper, heartbeat, webhook dispatcher) report a dependency down."""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.brokers.stub import StubBroker

from mediamill.workers.queue import QUEUE_NAME


def check_broker(broker: dramatiq.Broker) -> None:
    """Raise when the broker cannot be reached."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    if isinstance(broker, RedisBroker):
        broker.client.ping()
    elif isinstance(broker, RabbitmqBroker):
        broker.get_queue_message_counts(QUEUE_NAME)


def queue_depth(broker: dramatiq.Broker, queue_name: str = QUEUE_NAME) -> int:
    """Messages waiting in `queue_name` (ready plus delayed)."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    if isinstance(broker, RedisBroker):
        base = f"{broker.namespace}:{queue_name}"
        return int(broker.client.llen(base)) + int(broker.client.llen(f"{base}.DQ"))
    if isinstance(broker, RabbitmqBroker):
        ready, delayed, _dead = broker.get_queue_message_counts(queue_name)
        return int(ready) + int(delayed)
    if isinstance(broker, StubBroker):
        return sum(
            broker.queues[name].qsize()
            for name in (queue_name, f"{queue_name}.DQ")
            if name in broker.queues
        )
    return 0


class OutageLog:
    """How a background loop reports its failures while Redis or PostgreSQL is down:
    the traceback once per outage, then one line per failure, and a line when it works
    again. A loop that ticks every second would otherwise print a traceback a second."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.since: float | None = None  # time.monotonic() of the outage's first failure

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning("%s failed; will try again", self.what, exc_info=exc)
        else:
            self.logger.warning("%s failed again: %s: %s", self.what, type(exc).__name__, exc)

    def succeeded(self) -> float | None:
        """Call after each success; the outage's length in seconds when one just ended."""
        if self.since is None:
            return None
        lasted_s, self.since = time.monotonic() - self.since, None
        self.logger.info("%s works again after %.1f s", self.what, lasted_s)
        return lasted_s
