"""Broker health and queue depth, for /ready and /metrics. One function per broker
kind, so the API never reaches into dramatiq's internals itself."""

from __future__ import annotations

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
