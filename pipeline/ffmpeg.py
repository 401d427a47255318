"""The one way MediaMill runs ffmpeg: argument lists, a wall-clock limit, named errors.

Arguments are lists (never a shell string) built from validated enums and numbers;
the command is logged; a run past its limit is killed; a failure raises
`FFmpegError` carrying the tail of stderr.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from functools import lru_cache

from mediamill.config.settings import get_settings
from mediamill.schemas.errors import FFmpegError, ProcessingTimeoutError

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 4000


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """`MEDIAMILL_FFMPEG`, else the binary shipped in the imageio-ffmpeg wheel."""
    return get_settings().ffmpeg_path


def run_ffmpeg(args: Sequence[str], *, timeout_s: float, binary: str | None = None) -> str:
    """Run ffmpeg with `args` (without the program name). Returns stderr on success."""
    cmd = [binary or ffmpeg_binary(), "-hide_banner", "-nostdin", *map(str, args)]
    log.info("ffmpeg: %s", subprocess.list2cmdline(cmd))
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessingTimeoutError(
            f"ffmpeg ran past its {timeout_s:.0f} s limit", stderr=_tail(exc.stderr)
        ) from exc
    stderr = _tail(proc.stderr)
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise FFmpegError(f"ffmpeg exited with {proc.returncode}: {last}", stderr=stderr)
    return stderr


def _tail(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
