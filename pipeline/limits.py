"""The operator's limits on media, checked while a file is probed and decoded.

Declared facts (header durations, dimensions) are checked before any decoding, so
an honest header over a limit costs nothing. Decoded duration is checked as it
grows, so a lying or missing header costs at most the media the limits allow: with
a bitrate floor, decoding stops after (file bits / floor) seconds of media, work
bounded by the file's size however much the file expands to.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediamill.config.settings import Settings
from mediamill.schemas.errors import (
    DecompressionBombError,
    DimensionsTooLargeError,
    DurationTooLongError,
    FileTooLargeError,
)


@dataclass(frozen=True)
class MediaLimits:
    """What one job may process. None or 0 means no limit on that axis."""

    max_bytes: int | None = None
    max_duration_s: float | None = None
    max_width_px: int | None = None
    max_height_px: int | None = None
    min_bitrate_bps: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            max_bytes=settings.upload_max_bytes,
            max_duration_s=settings.max_duration_s,
            max_width_px=settings.max_video_width_px,
            max_height_px=settings.max_video_height_px,
            min_bitrate_bps=settings.min_media_bitrate_bps,
        )

    def check_size(self, size_bytes: int) -> None:
        """FileTooLargeError past `max_bytes`."""
        if self.max_bytes is not None and size_bytes > self.max_bytes:
            raise FileTooLargeError(
                f"the file holds {size_bytes} bytes; the limit is {self.max_bytes} "
                "(MEDIAMILL_UPLOAD_MAX_BYTES)",
                size_bytes=size_bytes,
                limit_bytes=self.max_bytes,
            )

    def check_dimensions(self, width_px: int, height_px: int) -> None:
        """DimensionsTooLargeError when either side is over its limit."""
        too_wide = self.max_width_px is not None and width_px > self.max_width_px
        too_tall = self.max_height_px is not None and height_px > self.max_height_px
        if too_wide or too_tall:
            raise DimensionsTooLargeError(
                f"video of {width_px}x{height_px} px is over the limit of "
                f"{self.max_width_px}x{self.max_height_px} px "
                "(MEDIAMILL_MAX_VIDEO_WIDTH_PX / _HEIGHT_PX)"
            )

    def max_media_s(self, size_bytes: int) -> float | None:
        """The most seconds of media a file of `size_bytes` may hold, if limited."""
        bounds = []
        if self.max_duration_s:
            bounds.append(self.max_duration_s)
        if self.min_bitrate_bps > 0:
            bounds.append(size_bytes * 8 / self.min_bitrate_bps)
        return min(bounds) if bounds else None

    def check_duration(self, duration_s: float, size_bytes: int, *, declared: bool) -> None:
        """DurationTooLongError past `max_duration_s`; DecompressionBombError when the
        duration would mean fewer than `min_bitrate_bps` bits of file per second."""
        said = "declares" if declared else "decodes to more than"
        if self.max_duration_s and duration_s > self.max_duration_s:
            raise DurationTooLongError(
                f"the media {said} {duration_s:.0f} s; the limit is {self.max_duration_s:.0f} s "
                "(MEDIAMILL_MAX_DURATION_S)",
                duration_s=duration_s,
            )
        if self.min_bitrate_bps > 0 and duration_s * self.min_bitrate_bps > size_bytes * 8:
            raise DecompressionBombError(
                f"a file of {size_bytes} bytes that {said} {duration_s:.0f} s of media "
                f"({size_bytes * 8 / duration_s:.0f} bits per second; the floor is "
                f"{self.min_bitrate_bps}, MEDIAMILL_MIN_MEDIA_BITRATE_BPS)",
                duration_s=duration_s,
                size_bytes=size_bytes,
            )


NO_LIMITS = MediaLimits()
