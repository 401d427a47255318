"""What analysis learns about a media file: streams, loudness, and the Asset resource."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from mediamill.schemas.base import CamelModel


class VideoInfo(CamelModel):
    """The first video stream, as read from the container (frames are not decoded)."""

    codec: str
    width: int
    height: int
    frame_rate: float | None = None
    bitrate_bps: int | None = Field(default=None, alias="bitrate")


class LoudnessStats(CamelModel):
    """ITU-R BS.1770-4 / EBU R128 measurements. None where the signal gives no value
    (silence, or shorter than one 400 ms gating block)."""

    integrated_lufs: float | None = Field(default=None, alias="lufs")
    true_peak_dbtp: float | None = Field(default=None, alias="truePeak")
    loudness_range_lu: float | None = Field(default=None, alias="loudnessRange")
    sample_peak_dbfs: float | None = Field(default=None, alias="samplePeak")
    max_momentary_lufs: float | None = Field(default=None, alias="maxMomentary")
    max_short_term_lufs: float | None = Field(default=None, alias="maxShortTerm")


class TrackChoice(CamelModel):
    """Which of a file's audio (or video) tracks was used, and why: every rendition and
    measurement is of this one track."""

    index: int  # among the file's tracks of this kind, in order (ffmpeg's `a:N` / `v:N`)
    count: int  # how many tracks of this kind the file has
    reason: str
    language: str | None = None


class Tracks(CamelModel):
    """The audio and the video track an asset was made from."""

    audio: TrackChoice | None = None
    video: TrackChoice | None = None


class MediaInfo(CamelModel):
    """Container and stream facts from one pass over the file."""

    asset_type: str = Field(alias="assetType")
    container: str
    codec: str | None = None
    bitrate_bps: int | None = Field(default=None, alias="bitrate")
    channels: int | None = None
    channel_layout: str | None = None
    sample_rate_hz: int | None = Field(default=None, alias="sampleRate")
    duration_ms: int | None = Field(default=None, alias="duration")
    video: VideoInfo | None = None
    tracks: Tracks | None = None


class AnalysisResult(CamelModel):
    """Everything the analysis stage produces for one original."""

    media: MediaInfo
    loudness: LoudnessStats


class AssetStatus(StrEnum):
    STORED = "stored"
    ANALYSING = "analysing"
    ANALYSED = "analysed"
    FAILED = "failed"


class Asset(CamelModel):
    """The Asset resource of DESIGN.md. `originalAssetId` is the SHA-256 of the bytes."""

    original_asset_id: str = Field(alias="originalAssetId")
    asset_type: str | None = Field(default=None, alias="assetType")
    size_bytes: int = Field(alias="sizeBytes")
    container: str | None = None
    codec: str | None = None
    bitrate_bps: int | None = Field(default=None, alias="bitrate")
    channels: int | None = None
    channel_layout: str | None = None
    sample_rate_hz: int | None = Field(default=None, alias="sampleRate")
    duration_ms: int | None = Field(default=None, alias="duration")
    integrated_lufs: float | None = Field(default=None, alias="lufs")
    true_peak_dbtp: float | None = Field(default=None, alias="truePeak")
    loudness_range_lu: float | None = Field(default=None, alias="loudnessRange")
    sample_peak_dbfs: float | None = Field(default=None, alias="samplePeak")
    max_momentary_lufs: float | None = Field(default=None, alias="maxMomentary")
    max_short_term_lufs: float | None = Field(default=None, alias="maxShortTerm")
    video: VideoInfo | None = None
    tracks: Tracks | None = None
    status: AssetStatus = AssetStatus.STORED
    error: dict[str, str] | None = None
    legacy_track_tokens: list[str] = Field(default_factory=list)
    deleted: bool = False
    created: datetime | None = None
    modified: datetime | None = None

    @classmethod
    def from_analysis(
        cls, asset_id: str, size_bytes: int, result: AnalysisResult, **extra: object
    ) -> Asset:
        """An Asset filled from an analysis result (used by the CLI's `analyse`)."""
        fields = result.media.model_dump() | result.loudness.model_dump()
        return cls(original_asset_id=asset_id, size_bytes=size_bytes, **fields, **extra)
