"""Native media code in supervised child processes, so a crash fails one job, not a worker.

PyAV decoding, the loudness meter's filters and header probing run C code on
untrusted bytes. Run in a worker's own process, one file that makes that code
segfault kills every thread of the worker, and the message, redelivered, kills the
next worker. So, as ffmpeg already runs in its own process, these run in a small pool
of pre-started children (`workers.native_child`), one task at a time each:

- a child that dies (SIGSEGV, SIGABRT, the OOM killer's SIGKILL) is replaced and its
  task tried once more in a fresh child (`crash_retries`); dying again fails the task
  with a permanent `WorkerCrashedError` naming the stage and the signal;
- a wait interrupted by the worker (a time limit, shutdown) kills the child, which
  may be mid-decode, and is replaced on the next call;
- requests and replies are JSON; errors come back by name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mediamill.pipeline.limits import NO_LIMITS, MediaLimits
from mediamill.schemas.errors import TransientError, WorkerCrashedError, error_from_name
from mediamill.schemas.media import AnalysisResult

log = logging.getLogger(__name__)

# Set in a child's environment when test crash files are honoured (see native_child).
CRASH_ENV = "MEDIAMILL_NATIVE_CHILD_CRASHES"

# How often a waiting thread returns to Python, where dramatiq's time limits (async
# exceptions) can reach it.
POLL_S = 0.1
STREAM_CHUNK_BYTES = 64 * 1024
FEEDER_JOIN_S = 30.0


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """One JSON message, framed by its 4-byte big-endian length."""
    data = json.dumps(message).encode()
    sock.sendall(len(data).to_bytes(4, "big") + data)


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None when the peer hung up first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next framed message, or None when the peer hung up."""
    header = read_exactly(sock, 4)
    body = None if header is None else read_exactly(sock, int.from_bytes(header, "big"))
    return None if body is None else json.loads(body)


class _ChildDiedError(Exception):
    def __init__(self, how: str, by_signal: bool) -> None:
        super().__init__(how)
        self.how, self.by_signal = how, by_signal


class _Child:
    """One child process and our end of its socket pair."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mediamill.workers.native_child", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None when none began to arrive within POLL_S."""
        self.sock.settimeout(POLL_S)
        try:
            started = self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return None
        except OSError:  # a reset: the child died with our request unread
            raise self.died() from None
        finally:
            self.sock.settimeout(None)
        try:
            message = receive_message(self.sock) if started else None
        except (OSError, ValueError):  # reset, or cut off mid-message
            raise self.died() from None
        if message is None:
            raise self.died()
        return message

    def died(self) -> _ChildDiedError:
        """How the child ended, once its connection closed."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # hung up but still running: end it
            self.kill()
            return _ChildDiedError("closed its connection", by_signal=False)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            return _ChildDiedError(f"died by {name}", by_signal=True)
        return _ChildDiedError(f"exited with status {code}", by_signal=False)

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()


class NativePool:
    """`size` pre-started children; `analyse` and `probe_duration_s` run in one of them.

    Callers block while every child is busy. Thread-safe."""

    def __init__(self, size: int, *, crash_retries: int = 1, test_crashes: bool = False) -> None:
        self.size = max(1, size)
        self.crash_retries = crash_retries
        self._env = dict(os.environ)
        self._env.pop(CRASH_ENV, None)
        if test_crashes:
            log.warning("native children honour test crash files (MEDIAMILL_TEST_CRASHES)")
            self._env[CRASH_ENV] = "1"
        self._idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._live = 0
        self._closed = False

    def start(self, count: int | None = None) -> NativePool:
        """Start `count` children now (default: all `size`), so tasks do not wait for a
        child's imports; more start when every child is busy, up to `size`."""
        with self._lock:
            wanted = min(self.size, count or self.size)
            missing = max(0, wanted - self._live)
            self._live += missing
        for _ in range(missing):
            self._idle.put(_Child(self._env))
        return self

    def __enter__(self) -> NativePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the idle children; busy ones stop when their task ends."""
        self._closed = True
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                return
            self._discard(child)

    # ---- tasks -----------------------------------------------------------------------

    def analyse(
        self,
        path: Path | str,
        *,
        stage: str = "analyse",
        on_progress: Callable[[float], None] | None = None,
        limits: MediaLimits = NO_LIMITS,
        audio_track: int | None = None,
        video_track: int | None = None,
    ) -> AnalysisResult:
        """`pipeline.analysis.analyse_file` in a child."""
        args = {
            "path": str(Path(path).resolve()),
            "limits": dataclasses.asdict(limits),
            "progress": on_progress is not None,
            "audio_track": audio_track,
            "video_track": video_track,
        }
        return AnalysisResult.model_validate(self._call("analyse", args, stage, on_progress))

    def probe_duration_s(
        self, source: Path | str | IO[bytes], *, stage: str = "ingest"
    ) -> float | None:
        """`pipeline.probe.probe_duration_s` in a child; a stream is fed to it through
        a pipe (only its first bytes are read)."""
        if isinstance(source, Path | str):
            return self._call("probe_duration", {"path": str(Path(source).resolve())}, stage)
        read_fd, write_fd = os.pipe()
        feeder = threading.Thread(target=_feed, args=(source, write_fd), daemon=True)
        feeder.start()
        try:
            # Not retried: a second child would read on from where the first stopped.
            return self._call(
                "probe_duration", {"path": None}, stage, pass_fd=read_fd, retries=0
            )
        finally:
            os.close(read_fd)
            feeder.join(FEEDER_JOIN_S)

    # ---- the exchange ----------------------------------------------------------------

    def _call(
        self,
        task: str,
        args: dict[str, Any],
        stage: str,
        on_progress: Callable[[float], None] | None = None,
        pass_fd: int | None = None,
        retries: int | None = None,
    ) -> Any:
        retries = self.crash_retries if retries is None else retries
        for attempt in range(retries + 1):
            child = self._acquire()
            owned = True  # until released or discarded, whatever interrupts us
            try:
                reply = self._exchange(child, task, args, on_progress, pass_fd)
                owned = False
                self._release(child)
            except _ChildDiedError as died:
                owned = False
                self._discard(child)
                log.warning(
                    "the %s stage's native process %s (try %d)", stage, died.how, attempt + 1
                )
                if not died.by_signal:  # not the media: Python itself failed to run
                    raise TransientError(
                        f"the {stage} stage's decoding process {died.how} before answering"
                    ) from None
                if attempt == retries:
                    raise WorkerCrashedError(
                        f"the {stage} stage crashed: its decoding process {died.how} "
                        f"({attempt + 1} tries)",
                        stage=stage,
                        how=died.how,
                    ) from None
                continue
            finally:
                if owned:  # a time limit or shutdown: the child may be mid-task
                    self._discard(child)
            if "error" in reply:
                error = reply["error"]
                raise error_from_name(str(error.get("name")), str(error.get("message")))
            return reply["result"]
        raise AssertionError("unreachable")

    def _exchange(
        self,
        child: _Child,
        task: str,
        args: dict[str, Any],
        on_progress: Callable[[float], None] | None,
        pass_fd: int | None,
    ) -> dict[str, Any]:
        try:
            send_message(child.sock, {"task": task, "args": args, "fd": pass_fd is not None})
            if pass_fd is not None:
                socket.send_fds(child.sock, [b"F"], [pass_fd])
        except OSError:
            raise child.died() from None
        while True:
            message = child.receive()
            if message is None:
                continue
            if "progress" in message:
                if on_progress is not None:
                    on_progress(float(message["progress"]))
                continue
            return message

    def _acquire(self) -> _Child:
        while True:
            try:
                child = self._idle.get(timeout=POLL_S)
            except queue.Empty:
                with self._lock:
                    grow = self._live < self.size
                    if grow:
                        self._live += 1
                if grow:
                    try:
                        return _Child(self._env)
                    except BaseException:
                        with self._lock:
                            self._live -= 1
                        raise
                continue
            try:
                if child.alive:
                    return child
            except BaseException:
                self._discard(child)
                raise
            self._discard(child)  # died while idle: the next round starts another

    def _release(self, child: _Child) -> None:
        self._idle.put(child)
        if self._closed:  # closed meanwhile: stop what is idle, this child included
            self.close()

    def _discard(self, child: _Child) -> None:
        with self._lock:
            self._live -= 1
        child.kill()


def _feed(stream: IO[bytes], fd: int) -> None:
    """Copy `stream` into the pipe until the reader has read what it wanted."""
    try:
        with os.fdopen(fd, "wb") as pipe:
            while chunk := stream.read(STREAM_CHUNK_BYTES):
                pipe.write(chunk)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the reader closed its end: it has the header it needed
    except Exception:
        log.warning("feeding a probe failed", exc_info=True)
