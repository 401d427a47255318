"""Which renditions can be made, and what to make when the original cannot support
the request (the Content Automation API's `exact` rule).

Rules, in order:
- A spec no encoder can deliver (see `SAMPLE_RATES_HZ` and `max_bitrate_bps`) is
  refused with `UnsupportedRenditionError`, whatever the original.
- More channels than the original has, a higher sample rate than it has, or (for a
  lossy original) a higher lossy bitrate than it has add nothing real. With
  `exact=True` that is a `LowQualityError`; otherwise the closest quality the
  original supports is delivered: channels and sample rate capped at the
  original's, and the highest supported bitrate not above the original's (the
  lowest supported one if even that is above), each cap recorded in `adjustments`.
- Lossless targets (flac, wav) from a lossy original: the file would claim a fidelity
  the original never had. `exact=True` refuses it (`LowQualityError`);
  `exact=False` delivers the decoded lossy audio in the lossless container and says
  so. A bitrate given with a lossless target does not apply and is dropped.
- Video (mp4) renditions are never upscaled: a height above the original's is
  refused with `exact=True` and capped otherwise.
"""

from __future__ import annotations

from mediamill.schemas.errors import LowQualityError, UnsupportedRenditionError
from mediamill.schemas.media import Asset
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec

LOSSLESS_CODECS = frozenset(
    {
        "flac",
        "alac",
        "wavpack",
        "truehd",
        "mlp",
        "ape",
        "tta",
    }
) | {
    f"pcm_{s}"
    for s in (
        "s8",
        "u8",
        "s16le",
        "s16be",
        "s24le",
        "s24be",
        "s32le",
        "s32be",
        "f32le",
        "f32be",
        "f64le",
        "f64be",
    )
}

_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_PCM_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# Sample rates each format can carry. Opus always decodes at 48 kHz; Vorbis below
# 32 kHz refuses or under-delivers most of the API's bitrates (measured with libvorbis).
SAMPLE_RATES_HZ: dict[RenditionFormat, tuple[int, ...]] = {
    RenditionFormat.MP3: _MP3_RATES,
    RenditionFormat.AAC: _AAC_RATES,
    RenditionFormat.OPUS: (48000,),
    RenditionFormat.OGG: (32000, 44100, 48000, 88200, 96000),
    RenditionFormat.FLAC: _PCM_RATES,
    RenditionFormat.WAV: _PCM_RATES,
}


# The bitrates a layer III stream can carry: MPEG-1 (32 kHz and up), MPEG-2 and 2.5 below.
_MP3_MPEG1_BPS = tuple(k * 1000 for k in (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224,
                                          256, 320))  # fmt: skip
_MP3_MPEG2_BPS = tuple(k * 1000 for k in (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144,
                                          160))  # fmt: skip
# The lowest bitrate each encoder delivers, per channel (Vorbis: the API's lowest,
# 64 kb/s, measured to hold at 32 kHz and up; below that libvorbis refuses some).
_MIN_BPS_PER_CHANNEL = {
    RenditionFormat.AAC: 16000,
    RenditionFormat.OPUS: 6000,
    RenditionFormat.OGG: 32000,
}


def mp3_bitrates_bps(sample_rate_hz: int) -> tuple[int, ...]:
    """The bitrates an MP3 at this sample rate can have (libmp3lame takes only these)."""
    if sample_rate_hz >= 32000:
        return _MP3_MPEG1_BPS
    return _MP3_MPEG2_BPS if sample_rate_hz >= 16000 else _MP3_MPEG2_BPS[:8]


def bitrate_refusal(fmt: RenditionFormat, bitrate: int, channels: int, rate: int) -> str | None:
    """Why the encoder cannot deliver `bitrate` for this layout, or None when it can:
    MP3 takes its layer's bitrates, the others a range (measured, not nominal)."""
    if fmt is RenditionFormat.MP3:
        allowed = mp3_bitrates_bps(rate)
        if bitrate not in allowed:
            shown = ", ".join(str(b // 1000) for b in allowed)
            return f"mp3 at {rate} Hz carries {shown} kb/s, not {bitrate} bps"
        return None
    low = _MIN_BPS_PER_CHANNEL[fmt] * (2 if fmt is RenditionFormat.OGG else channels)
    high = max_bitrate_bps(fmt, channels, rate)
    if not low <= bitrate <= high:
        return (
            f"{fmt} delivers {low} to {high} bps with {channels} channel(s) at {rate} Hz, "
            f"not {bitrate}"
        )
    return None


def _capped_bitrate(
    fmt: RenditionFormat, rate: int, original_bps: int, offered: tuple[int, ...] | None
) -> int:
    """The highest bitrate the format (or the `offered` list) has at or under the lossy
    original's: a copy cannot be better than what it is made from."""
    choices = offered or (mp3_bitrates_bps(rate) if fmt is RenditionFormat.MP3 else None)
    if choices:
        below = [b for b in choices if b <= original_bps]
        return max(below) if below else min(choices)
    return max(_MIN_BPS_PER_CHANNEL[fmt], original_bps // 1000 * 1000)


def max_bitrate_bps(fmt: RenditionFormat, channels: int, sample_rate_hz: int) -> int:
    """The highest bitrate the encoder delivers for this layout (measured, not nominal)."""
    if fmt is RenditionFormat.MP3:  # MPEG-2.5 / MPEG-2 / MPEG-1 layer III
        return 64000 if sample_rate_hz <= 12000 else 160000 if sample_rate_hz <= 24000 else 320000
    if fmt is RenditionFormat.OPUS:
        return 256000 * channels
    if fmt is RenditionFormat.OGG:
        return 160000 * channels
    if fmt is RenditionFormat.AAC:  # ffmpeg's native encoder undershoots past ~4 x rate
        return 4 * sample_rate_hz * channels
    raise ValueError(f"{fmt} has no bitrate")


def is_lossless_codec(codec: str | None) -> bool:
    return codec in LOSSLESS_CODECS


def resolve(
    requested: RenditionSpec,
    asset: Asset,
    exact: bool,
    *,
    offered: tuple[int, ...] | None = None,
) -> tuple[RenditionSpec, list[str]]:
    """The spec to make for `requested` from `asset`, and what was changed and why.
    `offered`: the only bitrates a lossy rendition may have (the Content Automation
    API's seven); None: any the encoder delivers."""
    if requested.format is RenditionFormat.MP4:
        return _resolve_video(requested, asset, exact)
    return _resolve_audio(requested, asset, exact, offered)


def _low(asset: Asset, why: str) -> LowQualityError:
    return LowQualityError(
        f"Quality for asset {asset.original_asset_id} is too low: {why}",
        asset_id=asset.original_asset_id,
    )


def _resolve_audio(
    requested: RenditionSpec, asset: Asset, exact: bool, offered: tuple[int, ...] | None
) -> tuple[RenditionSpec, list[str]]:
    fmt = requested.format
    if requested.channels is None:
        raise UnsupportedRenditionError("channels (1 or 2) must be given with format")
    if not asset.channels or not asset.sample_rate_hz:
        raise UnsupportedRenditionError(
            f"asset {asset.original_asset_id} has no audio to make a {fmt} rendition from"
        )
    adjustments: list[str] = []
    channels = requested.channels
    if channels > asset.channels:
        if exact:
            raise _low(asset, f"{channels} channels asked, the original has {asset.channels}")
        adjustments.append(
            f"channels {channels} -> {asset.channels}: the original has {asset.channels}"
        )
        channels = asset.channels

    rates = SAMPLE_RATES_HZ[fmt]
    if requested.sample_rate_hz is not None:
        rate = requested.sample_rate_hz
        if rate not in rates:
            raise UnsupportedRenditionError(
                f"{fmt} cannot carry {rate} Hz (supported: {', '.join(map(str, rates))})"
            )
        if rate > asset.sample_rate_hz and fmt is not RenditionFormat.OPUS:
            if exact:
                raise _low(asset, f"{rate} Hz asked, the original has {asset.sample_rate_hz} Hz")
            capped = _closest_rate(rates, asset.sample_rate_hz)
            adjustments.append(
                f"sample rate {rate} -> {capped}: the original has {asset.sample_rate_hz} Hz"
            )
            rate = capped
    else:
        rate = _closest_rate(rates, asset.sample_rate_hz)

    lossy_original = not is_lossless_codec(asset.codec)
    bitrate = requested.bitrate_bps
    if fmt.lossy:
        if bitrate is None:
            raise UnsupportedRenditionError(f"a bitrate must be given for {fmt}")
        if offered is not None and bitrate not in offered:
            raise UnsupportedRenditionError(
                f"bitrate must be one of {', '.join(map(str, offered))} for {fmt}"
            )
        refusal = bitrate_refusal(fmt, bitrate, channels, rate)
        if refusal is not None:
            raise UnsupportedRenditionError(refusal)
        original_bps = asset.bitrate_bps or 0
        if lossy_original and asset.video is None and original_bps and bitrate > original_bps:
            if exact:
                raise _low(asset, f"{bitrate} bps asked, the lossy original has {original_bps}")
            capped = _capped_bitrate(fmt, rate, original_bps, offered)
            adjustments.append(
                f"bitrate {bitrate} -> {capped}: the lossy original has {original_bps} bps"
            )
            bitrate = capped
    else:
        if lossy_original:
            if exact:
                raise _low(asset, f"a lossless {fmt} cannot be made from a lossy {asset.codec}")
            adjustments.append(
                f"lossless {fmt} from a lossy {asset.codec} original: "
                "no more faithful than the original"
            )
        if bitrate is not None:
            adjustments.append(f"bitrate {bitrate} does not apply to lossless {fmt}")
        bitrate = None

    effective = requested.model_copy(
        update={"channels": channels, "sample_rate_hz": rate, "bitrate_bps": bitrate}
    )
    return effective, adjustments


def _closest_rate(rates: tuple[int, ...], original_hz: int) -> int:
    """The original's rate if the format carries it, else the highest supported below
    it, else the lowest supported (a format that cannot go that low)."""
    if original_hz in rates:
        return original_hz
    below = [r for r in rates if r <= original_hz]
    return max(below) if below else min(rates)


def _resolve_video(
    requested: RenditionSpec, asset: Asset, exact: bool
) -> tuple[RenditionSpec, list[str]]:
    if asset.video is None:
        raise UnsupportedRenditionError(
            f"asset {asset.original_asset_id} has no video to make an mp4 rendition from"
        )
    height = requested.height or 0
    adjustments: list[str] = []
    if height > asset.video.height:
        if exact:
            raise _low(asset, f"{height}p asked, the original is {asset.video.height}p")
        adjustments.append(f"height {height} -> {asset.video.height}: never upscaled")
        height = asset.video.height - asset.video.height % 2
    channels = requested.channels
    if not asset.channels and channels is not None:
        # Screen recordings, B-roll: the rung is video only (no AAC track to make).
        adjustments.append("no audio track: the original has no audio stream")
        channels = None
    return requested.model_copy(update={"height": height, "channels": channels}), adjustments
