"""Where heartbeats and player events wait for the database: the hot path's buffer.

The API writes each accepted heartbeat or batch of events here and answers; a flush
(workers/playback_flush.py) moves them into the database in batches. Three kinds:

- `RedisBuffer` (the broker's Redis, or `MEDIAMILL_PLAYBACK_BUFFER_URL`): one stream
  of entries read through a consumer group. A flush takes entries (they become
  pending under its name), writes them, then acknowledges and deletes them; entries
  a flush took and never confirmed (its worker was killed) are claimed by the next
  flush after `MEDIAMILL_PLAYBACK_CLAIM_IDLE_S`. With Redis's append-only file a
  restart keeps the stream, the group and its pending entries. Each session's state
  sits beside them under a key that expires with the session.
- `MemoryBuffer` (embedded, no broker): the same, in this process.
- `DirectBuffer` (a RabbitMQ broker and no Redis): no buffer; records are written
  to the database at once (the hot path then waits for it).

Entries are stored once in the database whatever happens here, because every record
has its own key there (storage/playback.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import redis
import redis.asyncio
from pydantic import TypeAdapter, ValidationError

from mediamill.config.settings import Settings
from mediamill.schemas.errors import BufferUnavailableError
from mediamill.schemas.playback import (
    BufferedRecord,
    EventBatchRecord,
    HeartbeatRecord,
    SessionState,
)
from mediamill.storage import playback as playback_rows
from mediamill.storage.db import Database

log = logging.getLogger(__name__)

STREAM_KEY = "mediamill:playback:entries"
DEAD_KEY = "mediamill:playback:unreadable"
GROUP = "flush"
FLUSH_FLAG_KEY = "mediamill:playback:flush-scheduled"
STATE_PREFIX = "mediamill:playback:session:"
ENDED_PREFIX = "mediamill:playback:ended:"
# How long an ended session's mark outlives it: longer than any request that read the
# session as live before it ended can take to put its state back.
ENDED_MARK_S = 3600
_RECORD = TypeAdapter(BufferedRecord)
P = ParamSpec("P")
T = TypeVar("T")
HeartbeatOrEvents = HeartbeatRecord | EventBatchRecord


def consumer_name() -> str:
    """This thread's name in the consumer group: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class PlaybackBuffer(Protocol):
    """What the hot path writes to and the flush reads from."""

    async def state(self, session_id: str) -> SessionState | None:
        """The session's state while it is live (heard from within its TTL), else None."""
        ...

    async def put_state(self, state: SessionState, ttl_s: float) -> None:
        """Remember (or refresh) a session's state for `ttl_s`."""
        ...

    async def drop_state(self, session_id: str) -> None: ...

    async def accept(
        self,
        records: Sequence[HeartbeatOrEvents],
        state: SessionState,
        ttl_s: float,
        flush_after_s: float,
        *,
        state_changed: bool = False,
    ) -> bool | None:
        """Store `records` (as durably as the buffer is) if the session's state is still
        here, and keep it `ttl_s` longer (replaced by `state` when `state_changed`).
        None: the state is gone (ended, or expired), nothing was stored. Else True when
        no flush was scheduled in the last `flush_after_s` (the caller schedules one)."""
        ...

    def take(
        self, consumer: str, count: int, claim_idle_s: float
    ) -> list[tuple[str, HeartbeatOrEvents]]:
        """Up to `count` (entry id, record) pairs: entries taken by a consumer that has
        not confirmed them for `claim_idle_s` first, then new ones."""
        ...

    def confirm(self, entry_ids: Sequence[str]) -> None:
        """The entries are in the database: forget them."""
        ...

    def backlog(self) -> int:
        """Entries not yet confirmed (taken or not)."""
        ...

    def live(self, session_ids: Sequence[str]) -> set[str]:
        """Which of the sessions still have state here (a heartbeat within their TTL)."""
        ...

    def flush_unscheduled(self) -> None:
        """Forget that a flush is scheduled (the flush calls it as it starts)."""
        ...

    def ping(self) -> None:
        """Raise when the buffer cannot be reached (for /ready)."""
        ...


def _encode(record: HeartbeatOrEvents) -> str:
    return record.model_dump_json(by_alias=True)


def decode_record(raw: str | bytes) -> HeartbeatOrEvents:
    """A buffered record from its JSON (ValidationError when it is not one)."""
    return _RECORD.validate_json(raw)


# ---- Redis ----------------------------------------------------------------------------------

# One round trip per accepted heartbeat or batch: the session's state must still be
# there (a DELETE drops it; it expires with the session), then the entries are added,
# the state kept (or replaced) for the TTL, and the flush flag set unless it is.
# KEYS: state, stream, flush flag; ARGV: ttl ms, flush ms, new state or "", records...
_ACCEPT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 4, #ARGV do redis.call('XADD', KEYS[2], '*', 'r', ARGV[i]) end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# The state of a session goes back only if the session was not ended meanwhile (a
# request that read it live from the database just before a DELETE must not revive it).
# KEYS: state, ended mark; ARGV: state, ttl ms.
_PUT_STATE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# How long this process trusts a session state it read, without asking Redis again:
# whether the session is still live is asked with every accept all the same.
LOCAL_STATE_S = 5.0
ENDED_MARKS = 100_000  # ended sessions the in-process buffer remembers
POOL_CONNECTIONS = 64
POOL_WAIT_S = 5.0
LOCAL_STATES_MAX = 100_000


class _LocalStates:
    """Session states this API process read lately (the accept script still checks
    the state is in Redis, so an ended session takes nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[SessionState, float]] = {}

    def get(self, session_id: str) -> SessionState | None:
        hit = self._states.get(session_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, state: SessionState, ttl_s: float) -> None:
        with self._lock:
            if len(self._states) >= LOCAL_STATES_MAX:
                self._states.clear()
            self._states[state.session_id] = (
                state,
                time.monotonic() + min(ttl_s, LOCAL_STATE_S),
            )

    def pop(self, session_id: str, default: object = None) -> object:
        with self._lock:
            return self._states.pop(session_id, default)


def _unavailable_when_down(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Redis down (refused, reset, timed out) is BufferUnavailableError, a 503 with
    Retry-After: the record was not taken, and the player sends it again."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:  # full pool too
            log.warning("the playback buffer is unavailable: %s", exc)
            raise BufferUnavailableError(
                "heartbeats and events cannot be taken now; send them again shortly",
                retry_after_s=2,
            ) from exc

    return wrapper


class RedisBuffer:
    """The buffer in Redis: a stream read through a consumer group, session state in
    keys that expire with their session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=10.0)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._local = _LocalStates()
        self._group_ready = False

    def _aclient(self):
        """The asyncio client of the running event loop (a connection pool is bound to
        the loop that made it)."""

        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            # A bounded pool that waits for a free connection: a burst of requests
            # queues for at most POOL_WAIT_S instead of failing at once.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=POOL_CONNECTIONS,
                timeout=POOL_WAIT_S,
                socket_timeout=5.0,
            )
            client = redis.asyncio.Redis(connection_pool=pool)
            self._async[loop] = client
        return client

    @_unavailable_when_down
    async def state(self, session_id: str) -> SessionState | None:
        if (known := self._local.get(session_id)) is not None:
            return known
        raw = await self._aclient().get(STATE_PREFIX + session_id)
        return None if raw is None else SessionState.model_validate_json(raw)

    def _script(self, client: Any, name: str, source: str) -> Any:
        """The client's registered script `name` (an AsyncScript: EVALSHA, loaded again
        when Redis lost it)."""
        scripts = self._scripts.setdefault(client, {})
        if name not in scripts:
            scripts[name] = client.register_script(source)
        return scripts[name]

    @_unavailable_when_down
    async def put_state(self, state: SessionState, ttl_s: float) -> None:
        client = self._aclient()
        sid = state.session_id
        put = await self._script(client, "put", _PUT_STATE_LUA)(
            keys=[STATE_PREFIX + sid, ENDED_PREFIX + sid],
            args=[state.model_dump_json(), int(ttl_s * 1000)],
        )
        if int(put) == 1:
            self._local.put(state, ttl_s)

    @_unavailable_when_down
    async def drop_state(self, session_id: str) -> None:
        self._local.pop(session_id, None)
        pipe = self._aclient().pipeline(transaction=True)
        pipe.set(ENDED_PREFIX + session_id, b"1", ex=ENDED_MARK_S)
        pipe.delete(STATE_PREFIX + session_id)
        await pipe.execute()

    @_unavailable_when_down
    async def accept(
        self,
        records: Sequence[HeartbeatOrEvents],
        state: SessionState,
        ttl_s: float,
        flush_after_s: float,
        *,
        state_changed: bool = False,
    ) -> bool | None:
        client = self._aclient()
        sid = state.session_id
        answer = await self._script(client, "accept", _ACCEPT_LUA)(
            keys=[STATE_PREFIX + sid, STREAM_KEY, FLUSH_FLAG_KEY],
            args=[
                int(ttl_s * 1000),
                max(1, int(flush_after_s * 1000)),
                state.model_dump_json() if state_changed else "",
                *(_encode(r) for r in records),
            ],
        )
        if int(answer) < 0:
            self._local.pop(sid, None)
            return None
        self._local.put(state, ttl_s)
        return int(answer) == 1

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def take(
        self, consumer: str, count: int, claim_idle_s: float
    ) -> list[tuple[str, HeartbeatOrEvents]]:
        try:
            self._ensure_group()
            claimed = self.client.xautoclaim(
                STREAM_KEY, GROUP, consumer, int(claim_idle_s * 1000), "0-0", count=count
            )[1]
            fresh: list = []
            if len(claimed) < count:
                answer = self.client.xreadgroup(
                    GROUP, consumer, {STREAM_KEY: ">"}, count=count - len(claimed)
                )
                fresh = answer[0][1] if answer else []
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # Redis lost the group (restarted without its file)
            return []
        return self._decoded([*claimed, *fresh])

    def _decoded(self, entries: list) -> list[tuple[str, HeartbeatOrEvents]]:
        out: list[tuple[str, HeartbeatOrEvents]] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted meanwhile (XAUTOCLAIM reports it so)
                continue
            ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            raw = fields.get(b"r") or fields.get("r")
            try:
                out.append((ident, decode_record(raw)))
            except (ValidationError, TypeError):
                # Not something our API wrote: kept aside for a person, out of the way.
                log.error("playback buffer entry %s is unreadable; moved to %s", ident, DEAD_KEY)
                self.client.rpush(DEAD_KEY, raw if raw is not None else b"")
                self.confirm([ident])
        return out

    def confirm(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(STREAM_KEY, GROUP, *entry_ids)
        pipe.xdel(STREAM_KEY, *entry_ids)
        pipe.execute()

    def backlog(self) -> int:
        return int(self.client.xlen(STREAM_KEY))

    def live(self, session_ids: Sequence[str]) -> set[str]:
        if not session_ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for sid in session_ids:
            pipe.exists(STATE_PREFIX + sid)
        return {sid for sid, found in zip(session_ids, pipe.execute(), strict=True) if found}

    def flush_unscheduled(self) -> None:
        self.client.delete(FLUSH_FLAG_KEY)

    def ping(self) -> None:
        self.client.ping()


# ---- in this process ------------------------------------------------------------------------


class MemoryBuffer:
    """The buffer in this process (embedded: the API and the worker are one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._states: dict[str, tuple[SessionState, float]] = {}
        self._unread: OrderedDict[str, HeartbeatOrEvents] = OrderedDict()
        self._taken: dict[str, tuple[HeartbeatOrEvents, float]] = {}
        self._ids = itertools.count(1)
        self._flush_until = 0.0
        self._ended: OrderedDict[str, None] = OrderedDict()  # the newest ENDED_MARKS

    def _state_now(self, session_id: str) -> SessionState | None:
        hit = self._states.get(session_id)
        if hit is None:
            return None
        if hit[1] < self._clock():
            del self._states[session_id]
            return None
        return hit[0]

    async def state(self, session_id: str) -> SessionState | None:
        with self._lock:
            return self._state_now(session_id)

    async def put_state(self, state: SessionState, ttl_s: float) -> None:
        with self._lock:
            if state.session_id not in self._ended:
                self._states[state.session_id] = (state, self._clock() + ttl_s)

    async def drop_state(self, session_id: str) -> None:
        with self._lock:
            self._states.pop(session_id, None)
            self._ended[session_id] = None
            while len(self._ended) > ENDED_MARKS:
                self._ended.popitem(last=False)

    async def accept(
        self,
        records: Sequence[HeartbeatOrEvents],
        state: SessionState,
        ttl_s: float,
        flush_after_s: float,
        *,
        state_changed: bool = False,
    ) -> bool | None:
        with self._lock:
            if self._state_now(state.session_id) is None:
                return None
            now = self._clock()
            for record in records:
                self._unread[str(next(self._ids))] = record
            self._states[state.session_id] = (state, now + ttl_s)
            if now < self._flush_until:
                return False
            self._flush_until = now + flush_after_s
            return True

    def take(
        self, consumer: str, count: int, claim_idle_s: float
    ) -> list[tuple[str, HeartbeatOrEvents]]:
        with self._lock:
            now = self._clock()
            out = [
                (entry_id, record)
                for entry_id, (record, taken_at) in self._taken.items()
                if now - taken_at >= claim_idle_s
            ][:count]
            while len(out) < count and self._unread:
                out.append(self._unread.popitem(last=False))
            for entry_id, record in out:
                self._taken[entry_id] = (record, now)
            return out

    def confirm(self, entry_ids: Sequence[str]) -> None:
        with self._lock:
            for entry_id in entry_ids:
                self._taken.pop(entry_id, None)

    def backlog(self) -> int:
        with self._lock:
            return len(self._unread) + len(self._taken)

    def live(self, session_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {sid for sid in session_ids if self._state_now(sid) is not None}

    def flush_unscheduled(self) -> None:
        with self._lock:
            self._flush_until = 0.0

    def ping(self) -> None:
        return None


# ---- no buffer ------------------------------------------------------------------------------


class DirectBuffer(MemoryBuffer):
    """No shared buffer (a RabbitMQ broker without Redis): each accepted record is
    written to the database before the API answers. Session state is kept in this
    process only as a cache; a miss reads the database."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    async def state(self, session_id: str) -> SessionState | None:
        return None  # other processes change sessions too: the database decides

    async def put_state(self, state: SessionState, ttl_s: float) -> None:
        return None

    async def accept(
        self,
        records: Sequence[HeartbeatOrEvents],
        state: SessionState,
        ttl_s: float,
        flush_after_s: float,
        *,
        state_changed: bool = False,
    ) -> bool | None:
        def write() -> None:
            with self.db.session() as s:
                playback_rows.write_buffered(s, records)

        await asyncio.to_thread(write)
        return False

    def live(self, session_ids: Sequence[str]) -> set[str]:
        return set()  # the database is current: its heartbeat times decide


def buffer_for(settings: Settings, db: Database) -> PlaybackBuffer:
    """The buffer this deployment has: Redis (`MEDIAMILL_PLAYBACK_BUFFER_URL`, else a
    Redis broker's URL), this process's memory without a broker, else none."""
    url = settings.playback_buffer_url
    if url is None and settings.broker_url and settings.broker_url.startswith(("redis", "rediss")):
        url = settings.broker_url
    if url is not None:
        return RedisBuffer(url)
    if settings.broker_url is None:
        return MemoryBuffer()
    log.warning(
        "no Redis for the playback buffer (the broker is %s): heartbeats and events are "
        "written to the database as they come; set MEDIAMILL_PLAYBACK_BUFFER_URL=redis://...",
        settings.broker_url.split(":", 1)[0],
    )
    return DirectBuffer(db)
