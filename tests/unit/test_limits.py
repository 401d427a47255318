"""Media limits (pipeline/limits.py) in the analysis pass: declared facts refused
before decoding, decoded duration refused as it grows, so a decompression bomb
stops after the media its size allows; and message time limits capped by them."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import _load_script, make_sample

from mediamill.config.settings import Settings
from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.ffmpeg import run_ffmpeg
from mediamill.pipeline.limits import MediaLimits
from mediamill.schemas.errors import (
    DecompressionBombError,
    DimensionsTooLargeError,
    DurationTooLongError,
    FileTooLargeError,
    LimitExceededError,
    MediaError,
)
from mediamill.workers.queue import time_limit_ms

hostile = _load_script("make_hostile_corpus")

DEFAULTS = MediaLimits.from_settings(Settings(_env_file=None))


def bomb(tmp_path: Path, hours: float, *, declare_length: bool) -> Path:
    path = tmp_path / f"bomb-{hours}-{declare_length}.flac"
    path.write_bytes(hostile.flac_silence_bomb(hours * 3600, declare_length=declare_length))
    return path


def test_defaults_are_sane() -> None:
    assert DEFAULTS.max_bytes == 5 * 1024**3
    assert DEFAULTS.max_duration_s == 12 * 3600
    assert (DEFAULTS.max_width_px, DEFAULTS.max_height_px) == (8192, 8192)
    assert DEFAULTS.min_bitrate_bps == 2000


def test_limit_errors_are_permanent_but_do_not_condemn_the_media() -> None:
    for cls in (
        FileTooLargeError,
        DurationTooLongError,
        DimensionsTooLargeError,
        DecompressionBombError,
    ):
        assert issubclass(cls, LimitExceededError) and cls("x").permanent
        assert not issubclass(cls, MediaError)


def test_a_declared_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = bomb(tmp_path, 10, declare_length=True)
    declares = r"bytes that declares 3599\d s of media"
    with pytest.raises(DecompressionBombError, match=declares) as caught:
        analyse_file(path, limits=DEFAULTS)
    size = path.stat().st_size
    assert caught.value.context == {"duration_s": pytest.approx(36000, abs=2), "size_bytes": size}


def test_an_undeclared_bomb_stops_after_the_media_its_size_allows(tmp_path: Path) -> None:
    path = bomb(tmp_path, 10, declare_length=False)
    progress: list[float] = []
    with pytest.raises(DecompressionBombError, match="decodes to") as caught:
        analyse_file(path, on_progress=progress.append, limits=DEFAULTS)
    allowed_s = path.stat().st_size * 8 / DEFAULTS.min_bitrate_bps
    # Stopped within one packet (65535 samples) of the bound, not at ten hours.
    assert allowed_s < caught.value.context["duration_s"] < allowed_s + 65535 / 48000 + 1


def test_without_limits_a_short_bomb_is_just_silence(tmp_path: Path) -> None:
    path = bomb(tmp_path, 0.05, declare_length=False)  # 3 minutes in about 2.5 KB
    result = analyse_file(path)
    assert result.media.duration_ms == pytest.approx(180_000, abs=1400)
    with pytest.raises(DecompressionBombError):
        analyse_file(path, limits=DEFAULTS)


def test_duration_over_the_limit_declared_and_decoded(tmp_path: Path) -> None:
    flac = make_sample(tmp_path / "m.flac", kind="music", duration_s=3.0)
    short = MediaLimits(max_duration_s=2.0)
    with pytest.raises(DurationTooLongError, match="declares 3 s"):
        analyse_file(flac, limits=short)
    # A FLAC whose STREAMINFO says "length unknown": only decoding can tell.
    undeclared = tmp_path / "undeclared.flac"
    undeclared.write_bytes(hostile.flac_total_samples(flac.read_bytes(), 0))
    with pytest.raises(DurationTooLongError, match="decodes to"):
        analyse_file(undeclared, limits=short)
    assert analyse_file(undeclared, limits=MediaLimits(max_duration_s=3.5)).media.duration_ms == (
        3000
    )


def test_video_dimensions_and_video_only_duration(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    run_ffmpeg(
        [
            *("-y", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=3"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)),
        ],
        timeout_s=60,
    )
    assert analyse_file(video, limits=MediaLimits(max_width_px=96, max_height_px=64)).media.video
    with pytest.raises(DimensionsTooLargeError, match="96x64 px"):
        analyse_file(video, limits=MediaLimits(max_width_px=95))
    with pytest.raises(DimensionsTooLargeError):
        analyse_file(video, limits=MediaLimits(max_height_px=63))
    with pytest.raises(DurationTooLongError):
        analyse_file(video, limits=MediaLimits(max_duration_s=2.5))
    size = video.stat().st_size
    # A floor of half the file per second: 3 s of media would need 1.5 files.
    with pytest.raises(DecompressionBombError):
        analyse_file(video, limits=MediaLimits(min_bitrate_bps=size * 8 // 2))


def test_file_size_limit(tmp_path: Path) -> None:
    path = make_sample(tmp_path / "m.wav", kind="sine", duration_s=1.0)
    size = path.stat().st_size
    assert analyse_file(path, limits=MediaLimits(max_bytes=size)).media.duration_ms == 1000
    with pytest.raises(FileTooLargeError, match=f"{size} bytes"):
        analyse_file(path, limits=MediaLimits(max_bytes=size - 1))


def test_message_time_limits_count_media_up_to_the_duration_limit() -> None:
    settings = Settings(_env_file=None, max_duration_s=3600, time_limit_base_s=60)
    assert time_limit_ms(settings, 10.0) == 70_000
    assert time_limit_ms(settings, 3600.0) == 3_660_000
    # A header declaring centuries buys no more than the limit allows.
    assert time_limit_ms(settings, 1e10) == 3_660_000
