"""The flush's scheduling (workers/playback_flush.py): one message per interval from the
hot path, one from the sweeper while entries wait, and a flush out of time hands the
rest to a fresh message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playback_support import packaged_asset, stored_heartbeats
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.schemas.playback import HeartbeatRequest
from mediamill.workers import playback
from mediamill.workers.playback_flush import FLUSH_ACTOR, flush, sweep_playback
from mediamill.workers.queue import QUEUE_NAME


@pytest.fixture
def rt(make_runtime: MakeRuntime, tmp_path: Path):
    return make_runtime(
        Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            signing_secret="s" * 32,
            playback_flush_batch=2,
        )
    )


def _flush_messages(rt) -> list:
    queues = rt.broker.queues
    found = []
    for name in (QUEUE_NAME, f"{QUEUE_NAME}.DQ"):
        queue = queues.get(name)
        while queue is not None and not queue.empty():
            found.append(queue.get_nowait())
    return [m for m in found if FLUSH_ACTOR.encode() in m or FLUSH_ACTOR in str(m)]


def _beats(rt, sid: str, count: int) -> None:
    for i in range(count):
        asyncio.run(playback.heartbeat(rt, sid, HeartbeatRequest(position_seconds=float(i))))


def test_the_hot_path_schedules_one_flush_an_interval(rt) -> None:
    sid = playback.create_playback_session(rt, packaged_asset(rt), "d", None, "c").session_id
    _beats(rt, sid, 5)
    assert len(_flush_messages(rt)) == 1


def test_the_sweeper_schedules_a_flush_while_entries_wait(rt) -> None:
    sid = playback.create_playback_session(rt, packaged_asset(rt), "d", None, "c").session_id
    _beats(rt, sid, 1)
    _flush_messages(rt)  # the hot path's message was lost
    sweep_playback(rt)
    assert len(_flush_messages(rt)) == 1
    flush(rt)
    sweep_playback(rt)
    assert _flush_messages(rt) == []


def test_a_flush_out_of_time_hands_on(rt) -> None:
    sid = playback.create_playback_session(rt, packaged_asset(rt), "d", None, "c").session_id
    _beats(rt, sid, 5)
    _flush_messages(rt)
    result = flush(rt, budget_s=0)  # one batch of 2, then out of time
    assert result.entries == 2
    assert len(_flush_messages(rt)) == 1
    assert len(stored_heartbeats(rt, sid)) == 2
    flush(rt)
    assert len(stored_heartbeats(rt, sid)) == 5
