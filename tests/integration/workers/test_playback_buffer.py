"""The Redis playback buffer (workers/playback_buffer.py) against a real Redis: the same
contract as the in-process one (tests/unit/workers/test_playback_buffer.py): entries
stay until confirmed and pass to another flush once their taker went quiet; nothing is
taken for a session whose state is gone; an ended session cannot be put back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mediamill.schemas.playback import HeartbeatRecord, SessionState
from mediamill.workers.playback_buffer import RedisBuffer

pytestmark = pytest.mark.integration


@pytest.fixture
def buffer(redis_url: str) -> Iterator[RedisBuffer]:
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/10"  # a database of this test's own
    redis.Redis.from_url(url).flushdb()
    yield RedisBuffer(url)
    redis.Redis.from_url(url).flushdb()


def _state(session_id: str = "s1") -> SessionState:
    return SessionState(
        session_id=session_id,
        asset_id="a" * 64,
        package_id="pkg",
        duration_ms=9000,
        expires_at_s=2000,
        refresh_before_s=1900,
        client_id="c",
    )


def _beat(i: int) -> HeartbeatRecord:
    return HeartbeatRecord(
        id=f"hb-{i}",
        session_id="s1",
        received_at=datetime.now(UTC),
        position_seconds=float(i),
        is_paused=False,
    )


def test_the_redis_buffer_keeps_the_contract(buffer: RedisBuffer) -> None:
    async def hot_path() -> list:
        assert await buffer.accept([_beat(0)], _state(), 90, 1.0) is None  # no state yet
        await buffer.put_state(_state(), 90)
        first = await buffer.accept([_beat(1), _beat(2)], _state(), 90, 1.0)
        again = await buffer.accept([_beat(3)], _state(), 90, 1.0)
        return [first, again, await buffer.state("s1")]

    first, again, state = asyncio.run(hot_path())
    assert (first, again, state) == (True, False, _state())
    assert buffer.backlog() == 3 and buffer.live(["s1", "s2"]) == {"s1"}
    taken = buffer.take("a", 2, claim_idle_s=0.3)
    assert [r.id for _, r in taken] == ["hb-1", "hb-2"]
    assert [r.id for _, r in buffer.take("b", 10, claim_idle_s=0.3)] == ["hb-3"]
    buffer.confirm([taken[0][0]])
    assert buffer.take("c", 10, claim_idle_s=0.3) == []
    time.sleep(0.4)  # a and b went quiet
    again_taken = buffer.take("c", 10, claim_idle_s=0.3)
    assert sorted(r.id for _, r in again_taken) == ["hb-2", "hb-3"]
    buffer.confirm([entry_id for entry_id, _ in again_taken])
    assert buffer.backlog() == 0


def test_an_ended_session_cannot_be_revived(buffer: RedisBuffer) -> None:
    async def race() -> tuple:
        await buffer.put_state(_state(), 90)
        await buffer.drop_state("s1")  # DELETE
        await buffer.put_state(_state(), 90)  # a request that read it live just before
        buffer._local.pop("s1")
        return await buffer.state("s1"), await buffer.accept([_beat(1)], _state(), 90, 1.0)

    assert asyncio.run(race()) == (None, None)
    assert buffer.backlog() == 0
