"""A killed worker's Redis messages go back on the queue once its heartbeat is older
than the broker's timeout, when the sweeper asks (RecoveringRedisBroker), not at
dramatiq's random one-in-a-thousand maintenance."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from mediamill.workers.broker import RecoveringRedisBroker

pytestmark = pytest.mark.integration

QUEUE = "recovery"


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A Redis key namespace of this test's own (no flush of a shared database)."""
    name = f"mm-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


def broker(redis_url: str, namespace: str, heartbeat_timeout_ms: int) -> RecoveringRedisBroker:
    b = RecoveringRedisBroker(
        url=redis_url,
        namespace=namespace,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=0,  # only requeue_dead_workers() may run maintenance
        middleware=[],
    )
    b.declare_queue(QUEUE)
    return b


def fetch(b: RecoveringRedisBroker, queue: str = QUEUE) -> list[dramatiq.Message]:
    consumer = b.consume(queue, prefetch=10, timeout=100)
    got = []
    for _ in range(3):
        message = next(consumer)
        if message is not None:
            got.append(message)
    return got


def test_a_dead_workers_messages_are_requeued_after_the_heartbeat_timeout(
    redis_url: str, namespace: str
) -> None:
    dead = broker(redis_url, namespace, 60_000)
    sent = [
        dead.enqueue(dramatiq.Message(QUEUE, "actor", (i,), {}, {})).message_id for i in range(3)
    ]
    held = fetch(dead)  # fetched, never acked: the process is then killed
    assert sorted(m.message_id for m in held) == sorted(sent)

    patient = broker(redis_url, namespace, 60_000)
    patient.requeue_dead_workers()  # the dead worker beat moments ago: still alive to Redis
    assert fetch(patient) == []

    prompt = broker(redis_url, namespace, 200)
    time.sleep(0.5)
    prompt.requeue_dead_workers()
    again = fetch(prompt)
    assert sorted(m.message_id for m in again) == sorted(sent)


def test_delayed_messages_of_a_dead_worker_are_requeued_too(redis_url: str, namespace: str) -> None:
    dead = broker(redis_url, namespace, 60_000)
    message = dead.enqueue(dramatiq.Message(QUEUE, "actor", (), {}, {}), delay=10)
    delay_queue = message.queue_name
    assert delay_queue.endswith(".DQ")
    assert len(fetch(dead, delay_queue)) == 1

    prompt = broker(redis_url, namespace, 200)
    time.sleep(0.5)
    prompt.requeue_dead_workers()
    assert [m.message_id for m in fetch(prompt, delay_queue)] == [message.message_id]
