"""The analysis stage: probe and measure an original in one streaming decode pass.

Container and stream facts come from the demuxer; loudness comes from decoding
the audio once and feeding fixed-size blocks to `LoudnessMeter`. Video frames
are never decoded (their packets give duration). Memory stays bounded: at most
one block of decoded audio exists at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from mediamill.pipeline.formats import AUDIO_CODECS, VIDEO_CODECS, container_name, mime_type
from mediamill.pipeline.limits import NO_LIMITS, MediaLimits
from mediamill.pipeline.loudness import LoudnessMeter, channel_weights
from mediamill.schemas.errors import CorruptMediaError, InvalidRequestError, UnsupportedMediaError
from mediamill.schemas.media import (
    AnalysisResult,
    LoudnessStats,
    MediaInfo,
    TrackChoice,
    Tracks,
    VideoInfo,
)

BLOCK_S = 1.0
PROGRESS_INTERVAL_S = 0.5
MAX_DECODE_ERRORS = 8
# A stream that decodes to less than its declared duration minus this much is truncated.
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_RATIO = 0.02
# Sample rates outside this range are refused before anything is sized by them: the
# loudness meter needs the K-weighting shelf below Nyquist, and a header claiming
# gigahertz would size a one-second block buffer in gigabytes.
MIN_SAMPLE_RATE_HZ = 4000
MAX_SAMPLE_RATE_HZ = 768_000
# The column's width: a custom channel order is described channel by channel.
MAX_LAYOUT_NAME_CHARS = 64
# The smallest side of a 4:2:0 picture, so of any video rendition.
MIN_SIDE_PX = 2
# A WAV's data chunk header is looked for in this many first bytes.
WAV_HEADER_SCAN_BYTES = 64 * 1024

ProgressCallback = Callable[[float], None]


def analyse_file(
    path: Path | str,
    on_progress: ProgressCallback | None = None,
    limits: MediaLimits = NO_LIMITS,
    audio_track: int | None = None,
    video_track: int | None = None,
) -> AnalysisResult:
    """Probe and measure `path`. Raises CorruptMediaError or UnsupportedMediaError, or
    a LimitExceededError when the media is over `limits` (checked before and while
    decoding, so a decompression bomb stops early). `audio_track` / `video_track` pick
    a track of a file with several (default: the first flagged default); the result
    says which was used and why (InvalidRequestError for one the file lacks)."""
    # Absolute, so a file named like an ffmpeg protocol ("pipe:0") is still a file.
    path = Path(path).resolve()
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise CorruptMediaError("the file is empty", path=str(path))
    limits.check_size(size_bytes)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise UnsupportedMediaError(f"not a recognised media file ({exc.strerror})") from exc
    with container:
        if container.format.name == "wav":
            _check_wav_data_size(path, size_bytes)
        return _analyse_container(
            container, size_bytes, on_progress, limits, audio_track, video_track
        )


def _check_wav_data_size(path: Path, size_bytes: int) -> None:
    """ffmpeg plays a WAV whose data chunk claims more bytes than the file holds as a
    shorter whole one, so a cut WAV would pass the truncation check: compare the claim
    with the bytes present. 0 and 0xFFFFFFFF mean "unknown" (streaming writers)."""
    with path.open("rb") as f:
        head = f.read(WAV_HEADER_SCAN_BYTES)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    at = 12
    while at + 8 <= len(head):
        chunk, claimed = head[at : at + 4], int.from_bytes(head[at + 4 : at + 8], "little")
        if chunk == b"data":
            present = size_bytes - (at + 8)
            if claimed not in (0, 0xFFFFFFFF) and present < claimed:
                raise CorruptMediaError(
                    f"truncated: the WAV data chunk declares {claimed} bytes, "
                    f"the file holds {present}"
                )
            return
        at += 8 + claimed + (claimed & 1)


def _analyse_container(
    container: av.container.InputContainer,
    size_bytes: int,
    on_progress: ProgressCallback | None,
    limits: MediaLimits,
    audio_track: int | None = None,
    video_track: int | None = None,
) -> AnalysisResult:
    audio, audio_choice = _choose_track(
        list(container.streams.audio), "audio", audio_track, lambda s: _codec(s) in AUDIO_CODECS
    )
    video, video_choice = _choose_track(
        list(container.streams.video),
        "video",
        video_track,
        lambda s: (
            _codec(s) in VIDEO_CODECS and not s.disposition & av.stream.Disposition.attached_pic
        ),
    )
    if audio is None and video is None:
        found = sorted({_codec(s) for s in container.streams}) or ["none"]
        raise UnsupportedMediaError(
            f"no supported audio or video stream (found: {', '.join(found)})"
        )
    codecs = {_codec(s) for s in (audio, video) if s is not None}
    brand = container.metadata.get("major_brand")
    name = container_name(container.format.name, brand, codecs)
    if name is None:
        raise UnsupportedMediaError(f"unsupported container {container.format.name!r}")

    if audio is not None:
        _check_audio_format(audio)
    if video is not None:
        limits.check_dimensions(video.codec_context.width, video.codec_context.height)
        _check_encodable(video.codec_context.width, video.codec_context.height)
    declared_s = _declared_duration_s(container, audio or video)
    limits.check_duration(declared_s, size_bytes, declared=True)
    guard = _DurationGuard(limits, size_bytes)
    if audio is not None:
        loudness, decoded_s = _measure_audio(container, audio, declared_s, on_progress, guard)
    else:
        loudness, decoded_s = LoudnessStats(), _scan_video_duration_s(container, video, guard)
    if declared_s and decoded_s < declared_s - max(
        TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_RATIO * declared_s
    ):
        raise CorruptMediaError(
            f"truncated: decoded {decoded_s:.2f} s of a declared {declared_s:.2f} s"
        )
    if decoded_s <= 0:
        raise CorruptMediaError("no decodable media in the file")

    duration_ms = round(decoded_s * 1000)
    bitrate_bps = container.bit_rate or round(size_bytes * 8 / decoded_s)
    media = MediaInfo(
        asset_type=mime_type(name, video is not None),
        container=name,
        codec=_codec(audio) if audio is not None else _codec(video),
        bitrate_bps=bitrate_bps,
        channels=audio.codec_context.channels if audio is not None else None,
        channel_layout=audio.layout.name[:MAX_LAYOUT_NAME_CHARS] if audio is not None else None,
        sample_rate_hz=audio.codec_context.sample_rate if audio is not None else None,
        duration_ms=duration_ms,
        video=_video_info(video) if video is not None else None,
        tracks=Tracks(audio=audio_choice, video=video_choice),
    )
    return AnalysisResult(media=media, loudness=loudness)


def _choose_track(
    streams: list[Any], kind: str, requested: int | None, usable: Callable[[Any], bool]
) -> tuple[Any, TrackChoice | None]:
    """The track of `kind` to use, and the record of why. Asked for: that one, or
    InvalidRequestError (the file lacks it, or it is not a codec MediaMill takes: the
    bytes are fine, so the asset is not condemned). Else the first usable track flagged
    default, else the first usable one."""

    def choice(index: int, reason: str) -> TrackChoice:
        language = streams[index].metadata.get("language")
        return TrackChoice(
            index=index, count=len(streams), reason=reason, language=language or None
        )

    if requested is not None:
        if requested >= len(streams):
            raise InvalidRequestError(
                f"{kind} track {requested} was asked for; the file has {len(streams)} "
                f"{kind} track(s), numbered from 0"
            )
        if not usable(streams[requested]):
            raise InvalidRequestError(
                f"{kind} track {requested} is {_codec(streams[requested])}, which MediaMill "
                "does not take"
            )
        return streams[requested], choice(requested, "asked for by the job")
    candidates = [i for i, s in enumerate(streams) if usable(s)]
    if not candidates:
        return None, None
    flagged = [i for i in candidates if streams[i].disposition & av.stream.Disposition.default]
    if len(streams) == 1:
        return streams[0], choice(0, f"the only {kind} track")
    if len(candidates) == 1:
        return streams[candidates[0]], choice(
            candidates[0], f"the only {kind} track MediaMill takes"
        )
    if flagged:
        return streams[flagged[0]], choice(flagged[0], "the first track flagged default")
    return streams[candidates[0]], choice(
        candidates[0], "the first track (none is flagged default)"
    )


# Decoder names that differ from the codec's own name.
_CODEC_ALIASES = {"mp3float": "mp3", "libopus": "opus", "libvorbis": "vorbis", "libdav1d": "av1"}


def _codec(stream: av.stream.Stream) -> str:
    if stream.codec_context is None:  # no decoder for it (e.g. a WAV of 0-bit samples)
        return "unknown"
    name = stream.codec_context.name
    return _CODEC_ALIASES.get(name, name)


def _declared_duration_s(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _check_encodable(width_px: int, height_px: int) -> None:
    """UnsupportedMediaError for a picture no rendition can be made of: renditions are
    4:2:0 (each side a multiple of 2) and never upscaled, so at its own height, made
    even, each side must still be at least 2 px. Without this a 1x1 video "succeeded"
    with no rendition and no package: an asset with nothing to play."""
    height = height_px - height_px % 2
    width = 2 * round(width_px * height / height_px / 2) if height_px > 0 else 0
    if height < MIN_SIDE_PX or width < MIN_SIDE_PX:
        raise UnsupportedMediaError(
            f"a {width_px}x{height_px} px video is too small to encode: renditions are at "
            f"least {MIN_SIDE_PX}x{MIN_SIDE_PX} px and never upscaled"
        )


def _video_info(stream: av.video.stream.VideoStream) -> VideoInfo:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        codec=_codec(stream),
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        frame_rate=round(float(rate), 3) if rate else None,
        bitrate_bps=stream.bit_rate or None,
    )


class _DurationGuard:
    """Stops a decode as soon as the media decoded passes what the limits allow."""

    def __init__(self, limits: MediaLimits, size_bytes: int) -> None:
        self.limits, self.size_bytes = limits, size_bytes
        self.max_s = limits.max_media_s(size_bytes)

    def check(self, decoded_s: float) -> None:
        if self.max_s is not None and decoded_s > self.max_s:
            self.limits.check_duration(decoded_s, self.size_bytes, declared=False)


def _scan_video_duration_s(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    guard: _DurationGuard,
) -> float:
    """Duration of a video-only file from packet timestamps, without decoding frames."""
    first: int | None = None
    end = 0
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            end = max(end, packet.pts + (packet.duration or 0))
            if stream.time_base is not None:
                guard.check(float((end - first) * stream.time_base))
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"unreadable video stream ({exc.strerror})") from exc
    if first is None or stream.time_base is None:
        return 0.0
    return float((end - first) * stream.time_base)


class _BlockBuffer:
    """Collects decoded frames into fixed blocks so the meter sees few large arrays."""

    def __init__(self, meter: LoudnessMeter, channels: int, block_samples: int) -> None:
        self.meter = meter
        self.buf = np.empty((channels, block_samples), dtype=np.float32)
        self.fill = 0

    def push(self, samples: np.ndarray) -> None:
        n = samples.shape[1]
        offset = 0
        while offset < n:
            take = min(n - offset, self.buf.shape[1] - self.fill)
            self.buf[:, self.fill : self.fill + take] = samples[:, offset : offset + take]
            self.fill += take
            offset += take
            if self.fill == self.buf.shape[1]:
                self._add(self.buf)
                self.fill = 0

    def flush(self) -> None:
        if self.fill:
            self._add(self.buf[:, : self.fill])
            self.fill = 0

    def _add(self, block: np.ndarray) -> None:
        try:
            self.meter.add(block)
        except ValueError as exc:  # float PCM holding NaN or infinity
            raise CorruptMediaError(f"unmeasurable audio samples ({exc})") from exc


def _check_audio_format(stream: av.audio.stream.AudioStream) -> None:
    """Refuse a stream whose sample rate or channel count nothing can be sized by."""
    rate_hz = stream.codec_context.sample_rate
    if rate_hz <= 0 or len(stream.layout.channels) <= 0:
        raise CorruptMediaError("audio stream declares no sample rate or no channels")
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise UnsupportedMediaError(
            f"sample rate {rate_hz} Hz is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz"
        )


def packed_samples(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """The samples of a packed `flt` frame as a (channels, samples) float32 view.

    PyAV (<= 18.1 at least) counts a frame's planes by walking `extended_data` until a
    NULL pointer. A planar frame of 8 channels fills all eight `data` slots, so the walk
    reads past them; with more channels `extended_data` is an array of exactly that many
    pointers and the walk runs off the heap. Either way `to_ndarray()` and `planes`
    dereference garbage and the process dies with SIGSEGV. A packed frame has one plane
    (`data[1]` is NULL), so only packed frames are ever converted here.
    """
    if frame.format.name != "flt":
        raise ValueError(f"expected a packed flt frame, got {frame.format.name}")
    interleaved = np.frombuffer(frame.planes[0], dtype=np.float32, count=frame.samples * channels)
    return interleaved.reshape(frame.samples, channels).T


def _measure_audio(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    declared_s: float,
    on_progress: ProgressCallback | None,
    guard: _DurationGuard,
) -> tuple[LoudnessStats, float]:
    """Decode the audio stream once; return its loudness and decoded duration in seconds."""
    rate_hz = stream.codec_context.sample_rate
    layout = stream.layout
    channels = len(layout.channels)
    meter = LoudnessMeter(rate_hz, channel_weights([c.name for c in layout.channels]))
    # Converting to float in C (swresample) is cheaper than doing it in numpy. Packed,
    # not planar: see `packed_samples` for the PyAV bug planar frames of 8+ channels hit.
    resampler = av.AudioResampler(format="flt", layout=layout, rate=rate_hz)
    blocks = _BlockBuffer(meter, channels, int(rate_hz * BLOCK_S))
    decoded_samples = 0
    errors = 0
    last_report = time.monotonic()

    def consume(frames: list[av.AudioFrame]) -> None:
        nonlocal decoded_samples
        for frame in frames:
            for out in resampler.resample(frame):
                blocks.push(packed_samples(out, channels))
                decoded_samples += out.samples

    try:
        for packet in container.demux(stream):
            try:
                consume(packet.decode())
            except (av.error.InvalidDataError, av.error.PatchWelcomeError) as exc:
                errors += 1
                if errors > MAX_DECODE_ERRORS:
                    raise CorruptMediaError(
                        f"undecodable audio: {errors} bad packets ({exc.strerror})"
                    ) from exc
            guard.check(decoded_samples / rate_hz)
            if on_progress is not None and declared_s > 0:
                now = time.monotonic()
                if now - last_report >= PROGRESS_INTERVAL_S:
                    last_report = now
                    on_progress(min(1.0, decoded_samples / rate_hz / declared_s))
    except av.error.PatchWelcomeError as exc:
        # The demuxer meets what it cannot read, not damage: a chained Ogg whose next
        # link has another sample rate or layout. Swallowed, the asset would be the first
        # link alone; a named error says the rest could not be read.
        raise UnsupportedMediaError(
            f"the audio changes format at {decoded_samples / rate_hz:.2f} s (a chained "
            "Ogg whose next link has another sample rate or channel layout?), which "
            f"cannot be demuxed ({exc.strerror}); the media after it would be lost"
        ) from exc
    except av.error.FFmpegError as exc:
        if decoded_samples == 0:
            raise CorruptMediaError(f"unreadable audio stream ({exc.strerror})") from exc
        # A demuxer error after some audio: the truncation check below decides.
    for out in resampler.resample(None):
        blocks.push(packed_samples(out, channels))
        decoded_samples += out.samples
    blocks.flush()
    if on_progress is not None:
        on_progress(1.0)
    return meter.result(), decoded_samples / rate_hz
