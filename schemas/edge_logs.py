"""What the edge's JSON access log says of one request (config/edge.py's
ACCESS_LOG_FORMAT), and what an ingest of such logs found."""

from __future__ import annotations

from datetime import datetime

from mediamill.schemas.base import CamelModel


class SegmentRequest(CamelModel):
    """One media segment request of a playback session, as the edge logged it. `line_id`
    is the SHA-256 of the log line: the same line ingested twice is stored once."""

    line_id: str
    session_id: str
    asset_id: str
    package_id: str
    representation: int
    segment_number: int
    status: int
    bytes: int
    requested_at: datetime


class EdgeLogIngest(CamelModel):
    """What one ingest read: lines, the segment requests of sessions among them, how
    many were new (not ingested before), and lines that were not the edge's JSON."""

    lines: int = 0
    segment_requests: int = 0
    new_requests: int = 0
    unreadable_lines: int = 0
    unknown_sessions: int = 0

    def add(self, other: EdgeLogIngest) -> EdgeLogIngest:
        return EdgeLogIngest(
            **{name: getattr(self, name) + getattr(other, name) for name in type(self).model_fields}
        )


class SessionDelivery(CamelModel):
    """What the edge delivered to one session, per rendition: segments, bytes, and the
    span of the asset those segments cover (the positions watched, for players that
    send no heartbeats)."""

    session_id: str
    rendition: str
    segments: int
    bytes: int
    watched_from_s: float
    watched_to_s: float
