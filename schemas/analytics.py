"""View analytics: what a playback session's raw records become (a view, with its
sections), the audience facts resolved when the session starts (country, parsed user
agent), and the IBM Video Analytics shapes the `/analytics/v1/` routes answer with.

The IBM shapes keep that API's snake_case names (a client written for it works
unchanged); everything internal keeps units in its names (`_s`, `_ms`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class DeviceClass(StrEnum):
    """The `device` dimension: what kind of screen played, from the parsed user agent."""

    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    TV = "tv"
    OTHER = "other"


class Browser(BaseModel):
    family: str = "Other"
    major: str | None = None
    minor: str | None = None
    patch: str | None = None


class Os(BaseModel):
    family: str = "Other"
    major: str | None = None
    minor: str | None = None
    patch: str | None = None
    patch_minor: str | None = None


class Device(BaseModel):
    family: str = "Other"
    brand: str | None = None
    model: str | None = None


class DeviceInfo(BaseModel):
    """IBM's DeviceInfo: the user agent parsed (ua-parser's shape); the string itself is
    never stored."""

    browser: Browser = Field(default_factory=Browser)
    os: Os = Field(default_factory=Os)
    device: Device = Field(default_factory=Device)


class Audience(BaseModel):
    """What a playback session records of its viewer when it starts: the country of the
    client address (the address itself is dropped), the parsed user agent, and where
    playback happens (the tracking session's playout)."""

    country: str | None = None
    device_class: DeviceClass = DeviceClass.OTHER
    device_info: DeviceInfo = Field(default_factory=DeviceInfo)
    source: str | None = None


# ---- the raw facts of one session, and the view they make --------------------------------


class FactEvent(BaseModel):
    seq: int
    type: str
    occurred_at: datetime
    received_at: datetime
    position_s: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class FactHeartbeat(BaseModel):
    received_at: datetime
    position_s: float
    is_paused: bool


class FactSegment(BaseModel):
    """A media segment the edge served to the session (init segments excluded)."""

    requested_at: datetime
    from_s: float
    to_s: float


class SessionFacts(BaseModel):
    """Everything stored of one playback session, as the view derivation needs it."""

    session_id: str
    asset_id: str
    duration_ms: int | None
    created_at: datetime
    ended_at: datetime | None
    viewer_id: str
    authenticated: bool
    device_id: str
    audience: Audience
    events: list[FactEvent] = Field(default_factory=list)
    heartbeats: list[FactHeartbeat] = Field(default_factory=list)
    segments: list[FactSegment] = Field(default_factory=list)


class ViewSection(BaseModel):
    """One continuous stretch of watching: positions `from_s`..`to_s` of the asset,
    watched between `started_at` and `finished_at`."""

    from_s: float
    to_s: float
    started_at: datetime
    finished_at: datetime


class View(BaseModel):
    """One playback session's watching of its asset (the rules: docs/analytics.md)."""

    view_id: str
    session_id: str
    asset_id: str
    viewer_id: str
    authenticated: bool
    device_id: str
    audience: Audience
    duration_ms: int | None
    started_at: datetime
    finished_at: datetime | None  # None while unfinished
    last_activity_at: datetime
    watched_ms: int
    counted: bool
    completed: bool
    startup_ms: int | None = None
    playing_ms: int = 0
    rebuffer_ms: int = 0
    rebuffer_count: int = 0
    failed: bool = False
    protocol: str | None = None
    rendition: str | None = None
    avg_bitrate: int | None = None
    sections: list[ViewSection] = Field(default_factory=list)
    # Which whole percents of the duration (0..100) the sections covered: bit p of
    # this hex number (None without a duration). Retention sums these.
    coverage: str | None = None


# ---- IBM Video Analytics shapes -------------------------------------------------------------


class Link(BaseModel):
    href: str


class Pagination(BaseModel):
    """IBM's `pagination`: `count` is every item of the query, the links its pages."""

    count: int
    self: Link
    first: Link
    prev: Link | None
    next: Link | None
    last: Link


class Resource(BaseModel):
    type: str
    attributes: dict[str, Any]


class Page(BaseModel):
    pagination: Pagination
    data: list[Resource]


class ViewFigures(BaseModel):
    """What rollups and counts read of a view."""

    asset_id: str
    started_at: datetime
    viewer_id: str
    authenticated: bool
    device_id: str
    country: str | None
    device_class: str
    source: str | None
    counted: bool
    watched_ms: int
    completed: bool
    protocol: str | None = None
    rendition: str | None = None
    startup_ms: int | None = None
    playing_ms: int = 0
    rebuffer_ms: int = 0
    failed: bool = False
    avg_bitrate: int | None = None
    coverage: str | None = None
