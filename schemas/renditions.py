"""Renditions: what may be asked for (a spec), and what was made (a Rendition).

Specs hold only validated enums and numbers; everything that reaches an ffmpeg
command line is built from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from mediamill.schemas.base import CamelModel


class RenditionFormat(StrEnum):
    MP3 = "mp3"
    OGG = "ogg"  # Vorbis in Ogg
    OPUS = "opus"  # Opus in Ogg
    AAC = "aac"  # AAC-LC in .m4a
    FLAC = "flac"
    WAV = "wav"  # PCM
    MP4 = "mp4"  # H.264 + AAC video

    @property
    def lossy(self) -> bool:
        return self in LOSSY_FORMATS

    @property
    def extension(self) -> str:
        return {"aac": "m4a"}.get(self.value, self.value)


LOSSY_FORMATS = frozenset(
    {RenditionFormat.MP3, RenditionFormat.OGG, RenditionFormat.OPUS, RenditionFormat.AAC}
)
AUDIO_FORMATS = tuple(f for f in RenditionFormat if f is not RenditionFormat.MP4)
# The Content Automation API's bitrates for lossy audio.
AUDIO_BITRATES_BPS = (64000, 80000, 96000, 128000, 160000, 256000, 320000)


class LoudnessTarget(CamelModel):
    """Integrated loudness to reach and a true-peak ceiling not to cross."""

    integrated_lufs: float = Field(alias="lufs", ge=-70.0, le=0.0)
    true_peak_dbtp: float = Field(default=-1.0, alias="truePeak", ge=-20.0, le=0.0)


class RenditionSpec(CamelModel):
    """One requested output. Audio: format, bitrate (lossy only), channels, optional
    sample rate and loudness. Video (mp4): height and video bitrate."""

    format: RenditionFormat
    bitrate_bps: int | None = Field(default=None, alias="bitrate", gt=0)
    channels: int | None = Field(default=None, ge=1, le=2)
    sample_rate_hz: int | None = Field(default=None, alias="sampleRate", ge=8000, le=192000)
    # As small as a 4:2:0 picture goes: a video below the ladder gets a rung of its own.
    height: int | None = Field(default=None, ge=2, le=4320)
    loudness: LoudnessTarget | None = None

    @model_validator(mode="after")
    def _shape(self) -> RenditionSpec:
        if self.format is RenditionFormat.MP4:
            if self.height is None or self.bitrate_bps is None:
                raise ValueError("an mp4 rendition needs height and bitrate")
        elif self.height is not None:
            raise ValueError("height applies to mp4 renditions only")
        return self

    @property
    def spec_id(self) -> str:
        """A deterministic name for the spec: rendition keys derive from it, so
        re-running a transcode overwrites the same object."""
        parts = [self.format.value]
        if self.height is not None:
            parts.append(f"{self.height}p")
        if self.bitrate_bps is not None:
            parts.append(f"{self.bitrate_bps}")
        if self.channels is not None:
            parts.append(f"{self.channels}ch")
        if self.sample_rate_hz is not None:
            parts.append(f"{self.sample_rate_hz}hz")
        if self.loudness is not None:
            parts.append(f"l{self.loudness.integrated_lufs:g}tp{self.loudness.true_peak_dbtp:g}")
        return "-".join(parts)


class RenditionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class Rendition(CamelModel):
    """A rendition of an asset: the spec it was made to and what was measured on it."""

    id: str
    asset_id: str
    spec: RenditionSpec
    requested: RenditionSpec
    adjustments: list[str] = Field(default_factory=list)
    status: RenditionStatus
    storage_key: str | None = None
    codec: str | None = None
    bitrate_bps: int | None = Field(default=None, alias="bitrate")
    channels: int | None = None
    sample_rate_hz: int | None = Field(default=None, alias="sampleRate")
    duration_ms: int | None = Field(default=None, alias="duration")
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    integrated_lufs: float | None = Field(default=None, alias="lufs")
    true_peak_dbtp: float | None = Field(default=None, alias="truePeak")
    error: dict[str, str] | None = None
    created: datetime | None = None
    modified: datetime | None = None

    @property
    def adjusted(self) -> bool:
        return bool(self.adjustments)


def parse_audio_profile(text: str) -> list[RenditionSpec]:
    """`mp3:128000:2,flac:0:2` -> specs (settings' `default_audio_renditions`)."""
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fmt, bitrate, channels = item.split(":")
        specs.append(
            RenditionSpec(
                format=RenditionFormat(fmt),
                bitrate_bps=int(bitrate) or None,
                channels=int(channels),
            )
        )
    return specs


def parse_video_ladder(text: str) -> list[RenditionSpec]:
    """`1080:5000000,720:3000000` -> mp4 specs (settings' `default_video_ladder`)."""
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        height, bitrate = item.split(":")
        specs.append(
            RenditionSpec(
                format=RenditionFormat.MP4, height=int(height), bitrate_bps=int(bitrate),
                channels=2,
            )
        )
    return specs
