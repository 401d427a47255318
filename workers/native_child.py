"""The child side of `workers.native`: runs native media code (PyAV decoding and the
loudness meter) on untrusted bytes, so that a crash in it kills this process, not a
worker.

Started as `python -m mediamill.workers.native_child FD`, where FD is one end of a
socket pair. Requests and replies are JSON (never pickle: the parent does not trust
what a process that parsed hostile media sends back). Each request is one task;
progress messages may come before its one reply. The child exits when the parent
closes its end.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

# Imported before the first task, so a pre-started child pays this once.
from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.limits import MediaLimits
from mediamill.pipeline.probe import probe_duration_s
from mediamill.schemas.errors import MediaMillError
from mediamill.workers.native import CRASH_ENV, receive_message, send_message

# A file starting with this line makes the child die by the signal it names, but only
# when the parent enabled it (`MEDIAMILL_TEST_CRASHES`, see `workers.native`): tests
# need a real crash of the decoding process, production never honours it.
CRASH_MARKER = b"MEDIAMILL-TEST-CRASH "


def _maybe_crash(path: str) -> None:
    if os.environ.get(CRASH_ENV) != "1":  # production: the file is not even opened
        return
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(CRASH_MARKER):
        return
    name = head[len(CRASH_MARKER) :].split(b"\n", 1)[0].strip()
    if name == b"SIGABRT":
        os.abort()
    if name == b"SIGKILL":  # what the kernel's OOM killer sends
        os.kill(os.getpid(), signal.SIGKILL)
    if name == b"EXIT":  # the interpreter failing, not the media
        os._exit(3)
    ctypes.string_at(0)  # SIGSEGV: a genuine invalid read, as a codec bug would make


def _run(sock: socket.socket, request: dict[str, Any]) -> Any:
    task, args = request["task"], request["args"]
    if request.get("fd"):  # a stream, fed through a pipe whose end comes next
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
        with os.fdopen(fds[0], "rb") as stream:
            if task != "probe_duration":
                raise ValueError(f"native task {task!r} takes no stream")
            return probe_duration_s(stream)
    path = args["path"]
    _maybe_crash(path)
    if task == "analyse":

        def progress(fraction: float) -> None:
            send_message(sock, {"progress": fraction})

        result = analyse_file(
            Path(path),
            on_progress=progress if args.get("progress") else None,
            limits=MediaLimits(**args.get("limits", {})),
            audio_track=args.get("audio_track"),
            video_track=args.get("video_track"),
        )
        return result.model_dump(mode="json")
    if task == "probe_duration":
        return probe_duration_s(path)
    raise ValueError(f"unknown native task {task!r}")


def serve(sock: socket.socket) -> None:
    """Answer tasks until the parent hangs up."""
    while True:
        try:
            request = receive_message(sock)
        except OSError:
            return
        if request is None:
            return
        try:
            reply: dict[str, Any] = {"result": _run(sock, request)}
        except MediaMillError as exc:
            reply = {"error": {"name": exc.name, "message": exc.message}}
        except Exception as exc:  # a bug, not the media: reported, and the child lives on
            reply = {"error": {"name": "TransientError", "message": f"{type(exc).__name__}: {exc}"}}
        try:
            send_message(sock, reply)
        except OSError:
            return


def main() -> None:
    # The parent owns Ctrl-C and time limits; it kills this process when it must.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
