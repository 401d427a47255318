"""The Content Automation quality rules: closest quality, LowQualityError, refusals."""

from __future__ import annotations

import pytest

from mediamill.pipeline.quality import max_bitrate_bps, resolve
from mediamill.schemas.errors import LowQualityError, UnsupportedRenditionError
from mediamill.schemas.media import Asset, VideoInfo
from mediamill.schemas.renditions import AUDIO_BITRATES_BPS, RenditionFormat, RenditionSpec


def asset(
    codec: str = "flac",
    channels: int = 2,
    rate: int = 48000,
    bps: int = 900_000,
    video: VideoInfo | None = None,
) -> Asset:
    return Asset(
        original_asset_id="a" * 64,
        size_bytes=1,
        codec=codec,
        channels=channels,
        sample_rate_hz=rate,
        bitrate_bps=bps,
        video=video,
    )


def spec(
    fmt: str, bitrate: int | None = None, channels: int | None = 2, **kw: object
) -> RenditionSpec:
    return RenditionSpec(format=RenditionFormat(fmt), bitrate_bps=bitrate, channels=channels, **kw)


def test_lossless_original_supports_any_lossy_request() -> None:
    effective, notes = resolve(spec("mp3", 320000), asset(), exact=True)
    assert (effective.bitrate_bps, effective.channels, effective.sample_rate_hz) == (
        320000,
        2,
        48000,
    )
    assert notes == []


def test_more_channels_than_the_original() -> None:
    with pytest.raises(LowQualityError):
        resolve(spec("mp3", 128000, 2), asset(channels=1), exact=True)
    effective, notes = resolve(spec("mp3", 128000, 2), asset(channels=1), exact=False)
    assert effective.channels == 1 and "channels 2 -> 1" in notes[0]


def test_bitrate_above_a_lossy_original() -> None:
    mp3_128 = asset(codec="mp3", bps=128000)
    with pytest.raises(LowQualityError, match="too low"):
        resolve(spec("mp3", 320000), mp3_128, exact=True)
    effective, notes = resolve(spec("ogg", 320000), mp3_128, exact=False)
    assert effective.bitrate_bps == 128000 and "bitrate 320000 -> 128000" in notes[0]
    # The highest supported bitrate not above the original's (100 kbps -> 96 kbps).
    effective, _ = resolve(spec("mp3", 256000), asset(codec="aac", bps=100_000), exact=False)
    assert effective.bitrate_bps == 96000
    # The MP3 bitrate at or under the original's; from the Content Automation API's
    # seven, the lowest of them when all are above it, said so.
    effective, notes = resolve(spec("mp3", 128000), asset(codec="mp3", bps=48_000), exact=False)
    assert effective.bitrate_bps == 48000 and notes
    effective, notes = resolve(
        spec("mp3", 128000), asset(codec="mp3", bps=48_000), exact=False,
        offered=AUDIO_BITRATES_BPS,
    )  # fmt: skip
    assert effective.bitrate_bps == 64000 and notes


def test_native_requests_take_any_bitrate_the_encoder_delivers() -> None:
    """192 and 224 kb/s MP3, 72 kb/s Opus, 200 kb/s AAC: fine natively; only the
    Content Automation API's list of seven refuses them. MP3 keeps its layer's steps."""
    flac = asset()
    for fmt, bps in (("mp3", 192000), ("mp3", 224000), ("opus", 72000), ("aac", 200000),
                     ("ogg", 112000)):  # fmt: skip
        effective, _ = resolve(spec(fmt, bps), flac, exact=True)
        assert effective.bitrate_bps == bps
        with pytest.raises(UnsupportedRenditionError, match="one of"):
            resolve(spec(fmt, bps), flac, exact=True, offered=AUDIO_BITRATES_BPS)
    with pytest.raises(UnsupportedRenditionError, match=r"carries .* kb/s, not 150000"):
        resolve(spec("mp3", 150000), flac, exact=True)
    with pytest.raises(UnsupportedRenditionError, match="delivers"):
        resolve(spec("opus", 1000), flac, exact=True)


def test_lossless_target_from_a_lossy_original() -> None:
    with pytest.raises(LowQualityError):
        resolve(spec("flac", None), asset(codec="mp3", bps=320000), exact=True)
    effective, notes = resolve(spec("wav", 320000), asset(codec="mp3", bps=320000), exact=False)
    assert effective.bitrate_bps is None
    assert any("lossy" in n for n in notes) and any("does not apply" in n for n in notes)


def test_sample_rate_rules() -> None:
    effective, _ = resolve(spec("mp3", 128000), asset(rate=96000), exact=True)
    assert effective.sample_rate_hz == 48000, "mp3 carries at most 48 kHz"
    effective, _ = resolve(spec("opus", 96000), asset(rate=44100), exact=True)
    assert effective.sample_rate_hz == 48000, "opus always decodes at 48 kHz"
    with pytest.raises(LowQualityError):
        resolve(spec("flac", sample_rate_hz=96000), asset(rate=44100), exact=True)
    effective, notes = resolve(spec("flac", sample_rate_hz=96000), asset(rate=44100), exact=False)
    assert effective.sample_rate_hz == 44100 and notes
    with pytest.raises(UnsupportedRenditionError):
        resolve(spec("mp3", 128000, sample_rate_hz=96000), asset(rate=96000), exact=False)


@pytest.mark.parametrize(
    ("fmt", "bitrate", "channels", "rate"),
    [
        ("opus", 320000, 1, 48000),  # libopus: at most 256 kbps per channel
        ("ogg", 256000, 1, 48000),  # libvorbis refuses > 160 kbps per channel
        ("aac", 320000, 1, 48000),  # the native AAC encoder clamps
        ("mp3", 320000, 2, 22050),  # MPEG-2 layer III tops out at 160 kbps
        ("mp3", 127000, 2, 48000),  # not one of the API's bitrates
    ],
)
def test_combinations_no_encoder_delivers_are_refused_up_front(
    fmt: str, bitrate: int, channels: int, rate: int
) -> None:
    with pytest.raises(UnsupportedRenditionError):
        resolve(spec(fmt, bitrate, channels, sample_rate_hz=rate), asset(rate=rate), exact=False)


def test_lossy_formats_need_channels_and_audio() -> None:
    with pytest.raises(UnsupportedRenditionError):
        resolve(spec("mp3", 128000, None), asset(), exact=False)
    with pytest.raises(UnsupportedRenditionError):
        resolve(spec("mp3", 128000), asset(channels=0), exact=False)


def test_video_is_never_upscaled() -> None:
    hd = asset(codec="aac", bps=3_000_000, video=VideoInfo(codec="h264", width=1280, height=720))
    with pytest.raises(LowQualityError):
        resolve(spec("mp4", 5_000_000, height=1080), hd, exact=True)
    effective, notes = resolve(spec("mp4", 5_000_000, height=1080), hd, exact=False)
    assert effective.height == 720 and notes
    with pytest.raises(UnsupportedRenditionError):
        resolve(spec("mp4", 1_000_000, height=360), asset(), exact=False)


def test_spec_ids_are_deterministic_and_distinct() -> None:
    a = spec("mp3", 128000, 2)
    assert a.spec_id == spec("mp3", 128000, 2).spec_id == "mp3-128000-2ch"
    ids = {
        spec(f, 128000 if f in {"mp3", "ogg", "opus", "aac"} else None, c).spec_id
        for f in ("mp3", "ogg", "opus", "aac", "flac", "wav")
        for c in (1, 2)
    }
    assert len(ids) == 12


def test_max_bitrate_table_matches_measurements() -> None:
    assert max_bitrate_bps(RenditionFormat.MP3, 2, 8000) == 64000
    assert max_bitrate_bps(RenditionFormat.AAC, 2, 44100) >= 320000
