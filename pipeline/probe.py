"""Header-only probing: fast facts read without decoding (used to size time limits)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import av
import av.error

from mediamill.schemas.errors import UnsupportedMediaError


def probe_duration_s(source: Path | str | BinaryIO) -> float | None:
    """The duration the container declares, in seconds, or None if it declares none.
    `source` is a path or a readable stream (only its first bytes are read)."""
    target = str(Path(source).resolve()) if isinstance(source, Path | str) else source
    try:
        with av.open(target, metadata_errors="ignore") as container:
            if container.duration is not None:
                return container.duration / av.time_base
            for stream in container.streams:
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
    except av.error.FFmpegError as exc:
        raise UnsupportedMediaError(f"not a recognised media file ({exc.strerror})") from exc
    return None
