"""Bad inputs for the analysis stage, made from good generated samples."""

from __future__ import annotations

import os
from pathlib import Path

from mediamill.pipeline.ffmpeg import run_ffmpeg


def make_bad_inputs(d: Path, good_flac: Path, good_mp3: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the error name its job must fail with)."""
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, error: str) -> None:
        p = d / name
        p.write_bytes(data)
        out[name] = (p, error)

    put("empty.flac", b"", "CorruptMediaError")
    put("random.bin", os.urandom(64 * 1024), "UnsupportedMediaError")
    put("notes.txt", b"These are just some words, not audio.\n" * 200, "UnsupportedMediaError")
    flac = good_flac.read_bytes()
    put("truncated.flac", flac[: len(flac) // 3], "CorruptMediaError")
    mp3 = good_mp3.read_bytes()
    put("truncated.mp3", mp3[: len(mp3) // 3], "CorruptMediaError")
    srt = d / "subs.srt"
    srt.write_text(
        "1\n00:00:00,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 --> 00:00:05,000\nbye\n"
    )
    no_av = d / "subtitles-only.mkv"
    run_ffmpeg(["-y", "-i", str(srt), "-c:s", "srt", str(no_av)], timeout_s=60)
    srt.unlink()
    out["subtitles-only.mkv"] = (no_av, "UnsupportedMediaError")
    return out
