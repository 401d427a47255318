"""The one way MediaMill runs ffmpeg: argument lists, a wall-clock limit, named errors.

Arguments are lists (never a shell string) built from validated enums and numbers;
the command is logged; a run past its limit is killed; a failure raises
`FFmpegError` carrying the tail of stderr. With `on_progress`, ffmpeg's
`-progress` stream is read and reported as a fraction of `duration_s`.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

from mediamill.config.settings import get_settings
from mediamill.schemas.errors import FFmpegError, ProcessingTimeoutError

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 4000


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """`MEDIAMILL_FFMPEG`, else the binary shipped in the imageio-ffmpeg wheel."""
    return get_settings().ffmpeg_path


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout_s: float,
    binary: str | None = None,
    on_progress: Callable[[float], None] | None = None,
    duration_s: float | None = None,
) -> str:
    """Run ffmpeg with `args` (without the program name). Returns the stderr tail."""
    cmd = [binary or ffmpeg_binary(), "-hide_banner", "-nostdin"]
    if on_progress is not None:
        cmd += ["-nostats", "-progress", "pipe:1"]
    cmd += [str(a) for a in args]
    log.info("ffmpeg: %s", subprocess.list2cmdline(cmd))
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tail: collections.deque[bytes] = collections.deque(maxlen=64)
    drain = threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True)
    drain.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    killer = threading.Timer(timeout_s, kill)
    killer.start()
    try:
        for line in proc.stdout:
            if on_progress is not None and duration_s and line.startswith(b"out_time_us="):
                value = line.split(b"=", 1)[1].strip()
                if value.isdigit():
                    on_progress(min(1.0, int(value) / 1e6 / duration_s))
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:  # interrupted (e.g. a time limit): never leave ffmpeg running
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
    stderr = b"".join(tail).decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
    if timed_out.is_set():
        raise ProcessingTimeoutError(f"ffmpeg ran past its {timeout_s:.0f} s limit", stderr=stderr)
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise FFmpegError(f"ffmpeg exited with {proc.returncode}: {last}", stderr=stderr)
    return stderr
