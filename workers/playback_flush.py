"""The flush: buffered heartbeats and events into the database, in batches.

`schedule_flush` sends one `flush_playback` message, delayed by
`MEDIAMILL_PLAYBACK_FLUSH_INTERVAL_S` so that a batch gathers; the hot path calls it
at most once an interval (the buffer's flag says when one is scheduled), the sweeper
whenever entries wait. The actor takes entries, writes them in one transaction,
then confirms them: killed before it confirms, its entries are taken over by the
next flush and written again, which stores nothing twice (storage/playback.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from dramatiq import Message

from mediamill.schemas.base import utcnow
from mediamill.storage import playback as playback_rows
from mediamill.workers import runtime
from mediamill.workers.playback_buffer import consumer_name
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

FLUSH_ACTOR = "flush_playback"
# One message flushes for at most this long, then hands on to a fresh one.
FLUSH_BUDGET_S = 10.0


@dataclass(frozen=True)
class FlushResult:
    entries: int
    heartbeats: int
    events: int
    sessions_ended: int


def schedule_flush(rt: Runtime, delay_s: float | None = None) -> None:
    """Send one flush message, to run after `delay_s` (default: the flush interval)."""
    delay_s = rt.settings.playback_flush_interval_s if delay_s is None else delay_s
    message = Message(queue_name=QUEUE_NAME, actor_name=FLUSH_ACTOR, args=(), kwargs={}, options={})
    rt.broker.enqueue(message, delay=int(delay_s * 1000) or None)


def flush(rt: Runtime, *, budget_s: float = FLUSH_BUDGET_S) -> FlushResult:
    """Write what the buffer holds (up to `budget_s`, then another flush is sent for the
    rest) and end the sessions that stopped sending heartbeats."""
    buffer = rt.playback_buffer()
    settings = rt.settings
    buffer.flush_unscheduled()  # what arrives from now on schedules the next flush
    consumer = consumer_name()
    deadline = time.monotonic() + budget_s
    entries = heartbeats = events = 0
    while True:
        taken = buffer.take(consumer, settings.playback_flush_batch, settings.playback_claim_idle_s)
        if not taken:
            break
        with rt.db.session() as s:
            counts = playback_rows.write_buffered(s, [record for _, record in taken])
        buffer.confirm([entry_id for entry_id, _ in taken])
        entries += len(taken)
        heartbeats += counts.heartbeats
        events += counts.events
        if time.monotonic() > deadline:
            schedule_flush(rt, delay_s=0)
            break
    ended = end_idle_sessions(rt)
    if entries or ended:
        log.info(
            "playback flush: %d entries, %d new heartbeats, %d new events, %d sessions ended",
            entries,
            heartbeats,
            events,
            ended,
        )
    return FlushResult(entries, heartbeats, events, ended)


def end_idle_sessions(rt: Runtime) -> int:
    """End (reason `timeout`) the active sessions not heard from for
    `MEDIAMILL_PLAYBACK_SESSION_TTL_S`: idle in the database and without live state in
    the buffer (whose heartbeats the database may not have yet)."""
    idle_before = utcnow() - timedelta(seconds=rt.settings.playback_session_ttl_s)
    with rt.db.session() as s:
        candidates = playback_rows.idle_session_ids(s, idle_before)
    if not candidates:
        return 0
    live = rt.playback_buffer().live(candidates)
    idle = [sid for sid in candidates if sid not in live]
    with rt.db.session() as s:
        return playback_rows.end_idle_sessions(s, idle, idle_before)


def flush_playback() -> None:
    """The actor: one flush in this worker's runtime."""
    flush(runtime.current())


def sweep_playback(rt: Runtime) -> None:
    """The sweeper's part: a flush for entries nobody scheduled one for (a lost message,
    a worker killed mid-flush), and sessions that went quiet ended."""
    buffer = rt.playback_buffer()
    if buffer.backlog() > 0:
        schedule_flush(rt, delay_s=0)
    end_idle_sessions(rt)
