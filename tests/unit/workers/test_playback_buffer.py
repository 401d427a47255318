"""The in-process playback buffer (workers/playback_buffer.py): what the flush takes it
keeps until confirmed, hands over once a taker went quiet, and forgets session state
when the session's TTL runs out. The Redis buffer keeps the same contract in
tests/integration/workers/test_playback_buffer_redis.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from mediamill.schemas.playback import HeartbeatRecord, SessionState
from mediamill.workers.playback_buffer import MemoryBuffer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(session_id: str = "s1") -> SessionState:
    return SessionState(
        session_id=session_id,
        asset_id="a" * 64,
        package_id="pkg",
        duration_ms=9000,
        expires_at_s=2000,
        refresh_before_s=1900,
    )


def _beat(i: int, session_id: str = "s1") -> HeartbeatRecord:
    return HeartbeatRecord(
        id=f"hb-{i}",
        session_id=session_id,
        received_at=datetime.now(UTC),
        position_seconds=float(i),
        is_paused=False,
    )


def test_taken_entries_stay_until_confirmed_and_pass_on_when_their_taker_is_gone() -> None:
    clock = Clock()
    buffer = MemoryBuffer(clock)
    asyncio.run(buffer.put_state(_state(), 90))
    first = asyncio.run(buffer.accept([_beat(1), _beat(2), _beat(3)], _state(), 90, 1.0))
    assert first is True  # no flush scheduled yet: the caller schedules one
    assert asyncio.run(buffer.accept([_beat(4)], _state(), 90, 1.0)) is False
    taken = buffer.take("a", 2, claim_idle_s=30)
    assert [r.id for _, r in taken] == ["hb-1", "hb-2"]
    assert buffer.backlog() == 4
    assert [r.id for _, r in buffer.take("b", 10, claim_idle_s=30)] == ["hb-3", "hb-4"]
    buffer.confirm([taken[0][0]])
    assert buffer.take("c", 10, claim_idle_s=30) == []  # the rest is still someone's
    clock.now += 31  # its takers went quiet
    again = buffer.take("c", 10, claim_idle_s=30)
    assert sorted(r.id for _, r in again) == ["hb-2", "hb-3", "hb-4"]
    buffer.confirm([entry_id for entry_id, _ in again])
    assert buffer.backlog() == 0


def test_state_lives_for_its_ttl_and_each_accept_renews_it() -> None:
    clock = Clock()
    buffer = MemoryBuffer(clock)
    asyncio.run(buffer.put_state(_state(), 90))
    clock.now += 60
    asyncio.run(buffer.accept([_beat(1)], _state(), 90, 1.0))
    clock.now += 60
    assert asyncio.run(buffer.state("s1")) == _state()
    assert buffer.live(["s1", "s2"]) == {"s1"}
    clock.now += 31
    assert asyncio.run(buffer.state("s1")) is None
    assert buffer.live(["s1"]) == set()


def test_the_flush_flag_allows_one_schedule_an_interval() -> None:
    clock = Clock()
    buffer = MemoryBuffer(clock)
    asyncio.run(buffer.put_state(_state(), 90))
    assert asyncio.run(buffer.accept([_beat(1)], _state(), 90, 1.0)) is True
    assert asyncio.run(buffer.accept([_beat(2)], _state(), 90, 1.0)) is False
    buffer.flush_unscheduled()  # a flush started: what comes next needs another
    assert asyncio.run(buffer.accept([_beat(3)], _state(), 90, 1.0)) is True
    clock.now += 1.5
    assert asyncio.run(buffer.accept([_beat(4)], _state(), 90, 1.0)) is True


def test_nothing_is_taken_for_a_session_whose_state_is_gone() -> None:
    clock = Clock()
    buffer = MemoryBuffer(clock)
    assert asyncio.run(buffer.accept([_beat(1)], _state(), 90, 1.0)) is None
    asyncio.run(buffer.put_state(_state(), 90))
    asyncio.run(buffer.drop_state("s1"))  # ended
    assert asyncio.run(buffer.accept([_beat(2)], _state(), 90, 1.0)) is None
    assert buffer.backlog() == 0


def test_an_ended_session_state_cannot_be_put_back() -> None:
    """A request that read the session live just before it ended must not revive it."""
    buffer = MemoryBuffer(Clock())
    asyncio.run(buffer.put_state(_state(), 90))
    asyncio.run(buffer.drop_state("s1"))
    asyncio.run(buffer.put_state(_state(), 90))  # the late request
    assert asyncio.run(buffer.state("s1")) is None
    assert asyncio.run(buffer.accept([_beat(1)], _state(), 90, 1.0)) is None
