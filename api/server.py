"""Serving the API with uvicorn, guarded against slow and excess clients.

uvicorn has a keep-alive timeout but no limit on how long a client may take to send
its headers or body, and no cheap cap on connections: thousands of clients that send
a request line and one byte of a declared body each hold a socket, a parser and an
ASGI task for ever, until the process runs out of file descriptors and /health stops
answering. `GuardedH11Protocol` adds, per connection:

- a cap (`MEDIAMILL_HTTP_MAX_CONNECTIONS`): a connection past it is closed at once,
  before anything is read or parsed;
- a header deadline (`MEDIAMILL_HTTP_HEADER_TIMEOUT_S`): the request line and headers
  must all arrive within it (a slowloris that sends a byte a second is cut);
- a body idle timeout (`MEDIAMILL_HTTP_BODY_TIMEOUT_S`): a request body that stops
  arriving for that long is cut, however large the upload (like nginx's
  `client_body_timeout`);
- request buffering: a request with a body up to MAX_BUFFERED_BODY_BYTES reaches the
  parser and the app only once it has all arrived, so a stalled client costs its bytes
  so far (at most the head and 16 KiB), not a running ASGI task (about 26 KB each,
  measured); pipelined requests are handed over one at a time;

and the process's open-file limit is raised to its hard limit so the cap, not the
kernel, decides. What it cuts is counted and logged once every
`LOG_EVERY_S` as one line, never one line per client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mediamill.config.settings import Settings

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
# Requests with bodies up to this size are held until they have all arrived; larger
# ones (uploads) stream to the app as they come.
MAX_BUFFERED_BODY_BYTES = 16 * 1024
MAX_HEAD_BYTES = 16 * 1024  # h11's default limit on an incomplete request head
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # h11 accepts bare LF line ends too
# File descriptors kept for everything but client sockets (database, broker, store,
# native children, logs).
RESERVED_FDS = 256


class _Shed:
    """Counts connections cut, and says so in one line per LOG_EVERY_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._since = time.monotonic() - LOG_EVERY_S  # the first cut is told at once

    def count(self, why: str) -> None:
        with self._lock:
            self._counts[why] = self._counts.get(why, 0) + 1
            now = time.monotonic()
            if now - self._since < LOG_EVERY_S:
                return
            counts, self._counts, self._since = self._counts, {}, now
        summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        log.warning("connections cut in the last %.0f s: %s", LOG_EVERY_S, summary)


shed = _Shed()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, a header deadline and a body idle
    timeout (see the module docstring). Limits come from `configure` (class-wide: one
    server per process)."""

    max_connections = 10_000
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.max_connections = settings.http_max_connections
        cls.header_timeout_s = settings.http_header_timeout_s
        cls.body_timeout_s = settings.http_body_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._phase = ""
        self._pending = b""
        self._buffering = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self.transport, self.flow = transport, None  # what connection_lost reads
            transport.abort()
            shed.count("over the connection cap")
            return
        super().connection_made(transport)
        self._arm("headers", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self not in self.connections and self.flow is None:  # refused at the cap
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._buffering:
            # A request is handed to the parser and the app only once it has all
            # arrived (or streams a large body): a client stalling half-way holds its
            # bytes here, not a parser state and a running ASGI task.
            self._unset_keepalive_if_required()  # a request began: its own timeouts
            self._pending += data
            phase, end = _request_phase(self._pending)
            if phase == "headers":
                self._arm(phase, self.header_timeout_s)
                return
            if phase == "body":
                self._arm(phase, self.body_timeout_s)
                return
            if end is None:  # streamed: everything goes to the parser from here
                data, self._pending = self._pending, b""
            else:  # complete: this request only; a pipelined next one waits its turn
                data, self._pending = self._pending[:end], self._pending[end:]
            self._buffering = False
            self._disarm()
        super().data_received(data)
        self._arm_for_parser_state()

    def _arm_for_parser_state(self) -> None:
        """Timeouts for what the parser itself holds (a streamed body, or part of a
        pipelined request it was given while the previous one ran)."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm("body", self.body_timeout_s)  # idle timeout: re-armed per chunk
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm("headers", self.header_timeout_s)
        elif state is not h11.IDLE:
            self._disarm()  # the request has all arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        idle = self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE
        if idle and not self.conn.trailing_data[0]:
            self._buffering = True  # the next request on this connection is held again
            if self._pending:
                pending, self._pending = self._pending, b""
                self.data_received(pending)
        else:  # the parser holds (part of) the next request already
            self._arm_for_parser_state()

    def _arm(self, phase: str, timeout_s: float) -> None:
        if self._read_timer is not None:
            if phase == self._phase == "headers":
                return  # a deadline, not an idle timeout
            self._read_timer.cancel()
        self._phase = phase
        self._read_timer = self.loop.call_later(timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._phase = ""

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:  # we stopped reading, not them
            self._arm(self._phase or "body", self.body_timeout_s)
            return
        shed.count(f"too slow sending {self._phase}")
        self.transport.abort()


class _OncePerWindow(logging.Filter):
    """Lets one record per message template through every LOG_EVERY_S: asyncio logs
    every failed accept() and uvicorn every refused request, one line per client."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name != "asyncio":
            return True
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -LOG_EVERY_S) < LOG_EVERY_S:
                return False
            self._last[key] = now
        return True


def _request_phase(data: bytes) -> tuple[str, int | None]:
    """What a buffered request still waits for: ("headers" | "body", None), or ("ready",
    where the request ends in `data`), or ("ready", None) when the rest streams to the
    parser (chunked, over MAX_BUFFERED_BODY_BYTES, `Expect: 100-continue`, or a head
    too large or malformed, which h11 then refuses)."""
    head = _HEAD_END.search(data)
    if head is None:
        return ("headers", None) if len(data) <= MAX_HEAD_BYTES else ("ready", None)
    length = 0
    for line in re.split(rb"\r?\n", data[: head.start()])[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"transfer-encoding" or (name == b"expect" and value == b"100-continue"):
            return "ready", None  # the client waits for the app's 100 before its body
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return "ready", None  # h11 answers 400
    if length > MAX_BUFFERED_BODY_BYTES:
        return "ready", None
    end = head.end() + length
    return ("ready", end) if len(data) >= end else ("body", None)


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d", soft)
    return soft


def serve(app: Any, settings: Settings, host: str, port: int) -> None:
    """Run `app` until interrupted, with the guards above and uvicorn's keep-alive."""
    fds = raise_open_file_limit()
    cap = settings.http_max_connections
    if cap > fds - RESERVED_FDS:
        log.warning(
            "MEDIAMILL_HTTP_MAX_CONNECTIONS=%d does not fit the open-file limit %d: using %d",
            cap, fds, fds - RESERVED_FDS,
        )  # fmt: skip
        settings = settings.model_copy(update={"http_max_connections": fds - RESERVED_FDS})
    GuardedH11Protocol.configure(settings)
    once = _OncePerWindow()
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(once)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=GuardedH11Protocol,
        timeout_keep_alive=int(max(1, settings.http_keepalive_timeout_s)),
        backlog=settings.http_backlog,
        log_level="info",
        access_log=settings.http_access_log,
    )
