"""SHA-256 of files and streams, read in large chunks (hashlib releases the GIL)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20


def sha256_stream(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, int]:
    """(hex digest, size in bytes) of everything left in `stream`."""
    digest = hashlib.sha256()
    size_bytes = 0
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    while n := stream.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
        size_bytes += n
    return digest.hexdigest(), size_bytes


def sha256_file(path: Path | str) -> tuple[str, int]:
    with open(path, "rb", buffering=0) as f:
        return sha256_stream(f)
