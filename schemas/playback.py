"""Playback: tracking sessions (Media Jay's shapes), playback sessions with heartbeats
(EncoraStream's), the player events that belong to them, and the records that carry
heartbeats and events through the buffer (Redis, or the in-process queue) into the
database.

Every JSON name is camelCase, as the rest of the v0 API; positions are seconds, as
EncoraStream's `positionSeconds`, durations milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mediamill.schemas.base import CamelModel, RequestModel

MAX_DEVICE_ID_CHARS = 128
MAX_USER_ID_CHARS = 128
MAX_PLAYOUT_ID_CHARS = 128
MAX_EVENTS_PER_BATCH = 100
# Clocks of players disagree; an event stamped further ahead than this is refused.
MAX_CLOCK_SKEW_S = 24 * 3600
PLAYOUT_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
USER_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"  # printable ASCII, no spaces


# ---- tracking sessions ----------------------------------------------------------------------


class TrackingSession(CamelModel):
    """One visitor's tracking session: `sessionId`, `startTime`, `source` (what made it),
    the `playoutId` it belongs to, and `userId` only when the client sent one (with the
    user's consent)."""

    session_id: str
    start_time: datetime
    source: str
    playout_id: str
    user_id: str | None = None

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TrackingSessionRequest(RequestModel):
    """The optional body of `POST .../tracking/session` (the tracking guide's shape)."""

    user_id: str | None = Field(default=None, pattern=USER_ID_PATTERN)


# ---- playback sessions ----------------------------------------------------------------------


class PlaybackStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(StrEnum):
    CLIENT = "client"  # DELETE, or the beacon's pagehide
    TIMEOUT = "timeout"  # no heartbeat for MEDIAMILL_PLAYBACK_SESSION_TTL_S


def _absent(value: object) -> bool:
    return value is None


class PlaybackUrls(CamelModel):
    """A session's signed manifest URLs, signed at one instant: they expire together.
    With CloudFront signing, also the cookies its segments need (players do not carry a
    manifest's query string to the segments) and the path they are for."""

    hls_url: str
    dash_url: str
    expires_at: datetime
    token_refresh_before: datetime
    cookies: dict[str, str] | None = Field(default=None, exclude_if=_absent)
    cookie_path: str | None = Field(default=None, exclude_if=_absent)


class PlaybackSessionCreated(CamelModel):
    """The answer to `POST /v0/assets/{assetId}/playback-sessions` (EncoraStream's
    stream URLs, plus how often to send a heartbeat)."""

    session_id: str
    hls_url: str
    dash_url: str
    expires_at: datetime
    token_refresh_before: datetime
    heartbeat_interval_s: int
    cookies: dict[str, str] | None = Field(default=None, exclude_if=_absent)
    cookie_path: str | None = Field(default=None, exclude_if=_absent)


class ClientFacts(CamelModel):
    """What the API saw of the client making a playback session: used once, to resolve
    its country and parse its user agent, then dropped."""

    address: str | None = None
    user_agent: str | None = None


class HeartbeatRequest(RequestModel):
    """A heartbeat: where the player is, and whether it is paused. `seq` (optional, a
    number of the player's own, unique within the session) makes a retried heartbeat
    count once."""

    position_seconds: float = Field(ge=0, allow_inf_nan=False)
    is_paused: bool = False
    seq: int | None = Field(default=None, ge=0, le=2**53)


class HeartbeatResponse(CamelModel):
    """`refreshedUrls` is null until `tokenRefreshBefore` has passed; then fresh URLs,
    which the player should switch to. `sessionExpiresAt`: when the session ends
    unless another heartbeat comes."""

    refreshed_urls: PlaybackUrls | None
    session_expires_at: datetime


class PlaybackSession(CamelModel):
    """A playback session as listed (`GET /v0/playback-sessions`)."""

    session_id: str
    asset_id: str
    package_id: str
    device_id: str
    tracking_session_id: str | None
    user_id: str | None
    status: PlaybackStatus
    position_seconds: float | None
    is_paused: bool
    created_at: datetime
    last_heartbeat_at: datetime | None
    ended_at: datetime | None
    end_reason: EndReason | None
    expires_at: datetime


class SessionState(CamelModel):
    """What the hot path knows of a live session without the database: kept in the
    buffer beside the entries, refreshed with each heartbeat (there while the session
    is live, gone once it ended)."""

    session_id: str
    asset_id: str
    package_id: str
    duration_ms: int | None
    expires_at_s: int
    refresh_before_s: int
    client_id: str = ""  # the key that made it: other publishable keys may not touch it


# ---- player events --------------------------------------------------------------------------


class EventType(StrEnum):
    VIEW_START = "viewStart"
    PLAYING = "playing"
    PAUSE = "pause"
    SEEK = "seek"
    REBUFFER_START = "rebufferStart"
    REBUFFER_END = "rebufferEnd"
    RENDITION_CHANGE = "renditionChange"
    ERROR = "error"
    ENDED = "ended"


class _Event(RequestModel):
    """What every event has: a sequence number unique within its session (a retried
    batch is stored once), when it happened, and optionally where the player was."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0, le=2**53)
    timestamp: datetime
    position_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("timestamp")
    @classmethod
    def _aware_and_plausible(cls, value: datetime) -> datetime:
        value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if value > datetime.now(UTC) + timedelta(seconds=MAX_CLOCK_SKEW_S):
            raise ValueError("timestamp is more than a day in the future")
        if value.year < 2000:
            raise ValueError("timestamp is before the year 2000")
        return value.astimezone(UTC)

    def data(self) -> dict[str, Any]:
        """The event's own fields, as stored."""
        common = {"seq", "timestamp", "type", "position_seconds"}
        return self.model_dump(mode="json", by_alias=True, exclude=common, exclude_none=True)


class ViewStart(_Event):
    type: Literal["viewStart"]
    startup_ms: int = Field(ge=0, le=3_600_000)
    protocol: Literal["hls", "dash"] | None = None  # what the player streams


class Playing(_Event):
    type: Literal["playing"]


class Pause(_Event):
    type: Literal["pause"]


class Seek(_Event):
    type: Literal["seek"]
    from_seconds: float = Field(alias="from", ge=0, allow_inf_nan=False)
    to_seconds: float = Field(alias="to", ge=0, allow_inf_nan=False)


class RebufferStart(_Event):
    type: Literal["rebufferStart"]


class RebufferEnd(_Event):
    type: Literal["rebufferEnd"]


class RenditionChange(_Event):
    type: Literal["renditionChange"]
    bitrate: int = Field(ge=0, le=10**10)
    height: int | None = Field(default=None, ge=0, le=100_000)


class PlayerError(_Event):
    type: Literal["error"]
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(default="", max_length=1000)


class Ended(_Event):
    type: Literal["ended"]


PlayerEvent = Annotated[
    ViewStart
    | Playing
    | Pause
    | Seek
    | RebufferStart
    | RebufferEnd
    | RenditionChange
    | PlayerError
    | Ended,
    Field(discriminator="type"),
]


def _bounded_batch(data: Any) -> Any:
    """Refuse 10,000 events by their count, before validating each one."""
    events = data.get("events") if isinstance(data, dict) else None
    if isinstance(events, list) and len(events) > MAX_EVENTS_PER_BATCH:
        raise ValueError(
            f"a batch holds at most {MAX_EVENTS_PER_BATCH} events, not {len(events)}"
        )
    return data


class EventBatch(RequestModel):
    """`POST /v0/playback-sessions/{sessionId}/events`: 1 to 100 events."""

    events: list[PlayerEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return _bounded_batch(data)


class BeaconRequest(RequestModel):
    """What the beacon script sends with `navigator.sendBeacon` as the page goes away:
    the last events, the last position, and whether to end the session."""

    events: list[PlayerEvent] = Field(default_factory=list, max_length=MAX_EVENTS_PER_BATCH)
    position_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    is_paused: bool = False
    end: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        return _bounded_batch(data)


class EventsAccepted(CamelModel):
    """How many events of the batch were taken (all of them, or the batch was refused)."""

    accepted: int


# ---- what crosses the buffer ----------------------------------------------------------------


class HeartbeatRecord(CamelModel):
    """One accepted heartbeat, with the id the API gave it (stored once by that id)."""

    kind: Literal["heartbeat"] = "heartbeat"
    id: str
    session_id: str
    received_at: datetime
    position_seconds: float
    is_paused: bool
    # Set when this heartbeat got the session fresh URLs.
    urls_expire_at: datetime | None = None
    urls_refresh_before: datetime | None = None


class EventRecord(CamelModel):
    """One accepted player event (stored once by session and `seq`)."""

    session_id: str
    seq: int
    type: EventType
    occurred_at: datetime
    received_at: datetime
    position_seconds: float | None
    data: dict[str, Any]


class EventBatchRecord(CamelModel):
    """One accepted batch of events: one buffer entry."""

    kind: Literal["events"] = "events"
    session_id: str
    events: list[EventRecord]


BufferedRecord = Annotated[HeartbeatRecord | EventBatchRecord, Field(discriminator="kind")]
