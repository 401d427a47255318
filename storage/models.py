"""SQLAlchemy 2 ORM models: assets, legacy track tokens, jobs, the event outbox,
renditions and packages.

The database is the source of truth for state. Column names carry units
(`duration_ms`, `size_bytes`); the JSON shapes of DESIGN.md are built in
`storage/records.py`, not here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mediamill.schemas.base import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite forgets the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class AssetRow(Base):
    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    original_filename: Mapped[str | None] = mapped_column(String(512))
    asset_type: Mapped[str | None] = mapped_column(String(128))
    container: Mapped[str | None] = mapped_column(String(64))
    codec: Mapped[str | None] = mapped_column(String(64))
    bitrate_bps: Mapped[int | None] = mapped_column(BigInteger)
    channels: Mapped[int | None] = mapped_column(Integer)
    channel_layout: Mapped[str | None] = mapped_column(String(64))
    sample_rate_hz: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    integrated_lufs: Mapped[float | None] = mapped_column(Float)
    true_peak_dbtp: Mapped[float | None] = mapped_column(Float)
    loudness_range_lu: Mapped[float | None] = mapped_column(Float)
    sample_peak_dbfs: Mapped[float | None] = mapped_column(Float)
    max_momentary_lufs: Mapped[float | None] = mapped_column(Float)
    max_short_term_lufs: Mapped[float | None] = mapped_column(Float)
    video: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Which audio and video track the asset was made from, and why (`Tracks`).
    tracks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LegacyTrackTokenRow(Base):
    __tablename__ = "legacy_track_tokens"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    asset_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_enqueued", "status", "enqueued_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    asset_id: Mapped[str | None] = mapped_column(String(64), index=True)
    parent_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Runs of the current stage whose worker was lost (no heartbeat within the lease).
    lost_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The message currently allowed to work on this job (see workers/claims.py).
    message_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxEventRow(Base):
    """Events written in the same transaction as the state change they describe."""

    __tablename__ = "outbox_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[datetime | None] = mapped_column(index=True)


class RenditionRow(Base):
    """One (asset, spec) rendition. The unique pair makes its creation, and so the job
    that produces it, happen exactly once however many processes ask at once."""

    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("asset_id", "spec_id", name="uq_renditions_asset_spec"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    asset_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("assets.id", ondelete="CASCADE"), index=True
    )
    spec_id: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested: Mapped[dict[str, Any]] = mapped_column(JSON)
    adjustments: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    storage_key: Mapped[str | None] = mapped_column(String(512))
    codec: Mapped[str | None] = mapped_column(String(64))
    bitrate_bps: Mapped[int | None] = mapped_column(BigInteger)
    channels: Mapped[int | None] = mapped_column(Integer)
    sample_rate_hz: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    integrated_lufs: Mapped[float | None] = mapped_column(Float)
    true_peak_dbtp: Mapped[float | None] = mapped_column(Float)
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class PackageRow(Base):
    """One (asset, package id) package. The package id derives from its ladder, so
    packaging the same ladder twice updates this row and overwrites the same keys."""

    __tablename__ = "packages"
    __table_args__ = (UniqueConstraint("asset_id", "package_id", name="uq_packages_asset_package"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    asset_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("assets.id", ondelete="CASCADE"), index=True
    )
    package_id: Mapped[str] = mapped_column(String(64))
    renditions: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"specIds": [...]}
    segment_s: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    segment_count: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    master_key: Mapped[str | None] = mapped_column(String(512))
    manifest_key: Mapped[str | None] = mapped_column(String(512))
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """An API key: a public client id and the SHA-256 of its secret token (the token is
    shown once, at creation, and never stored)."""

    __tablename__ = "api_keys"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class UploadRow(Base):
    """An upload session: a place to PUT the bytes, then `complete` enqueues ingest."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    asset_type: Mapped[str | None] = mapped_column(String(128))
    legacy_track_token: Mapped[str | None] = mapped_column(String(128))
    storage_key: Mapped[str] = mapped_column(String(512))
    upload_url_expires_at: Mapped[datetime] = mapped_column()
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    asset_id: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class BucketEventRow(Base):
    """One object-created notification acted on. The unique (bucket, key, version)
    makes a re-sent notification a no-op: one ingest job per new object."""

    __tablename__ = "bucket_events"
    __table_args__ = (
        UniqueConstraint("bucket", "object_key", "version", name="uq_bucket_events_object"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(String(1024))
    version: Mapped[str] = mapped_column(String(255))  # versionId, else eTag, else sequencer
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKeyRow(Base):
    """A POST answered under an `Idempotency-Key`: the same key and body from the same
    client get the stored answer again instead of a second resource."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("client_id", "route", "key", name="uq_idempotency_keys_client_route_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LegacyAssetRow(Base):
    """A file of the legacy media cache, known by its legacy track token (the Content
    Automation API's legacy assets). `legacy_asset_id` is the SHA-256 of its bytes:
    when those bytes were uploaded, it is also an asset's id."""

    __tablename__ = "legacy_assets"

    legacy_track_token: Mapped[str] = mapped_column(String(128), primary_key=True)
    legacy_asset_id: Mapped[str | None] = mapped_column(String(64), index=True)
    original_filename: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpointRow(Base):
    """A subscriber's URL and the event types it wants. The signing secret is kept (it
    must sign every delivery); during a rotation the previous one signs too, until
    `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"types": [...]}
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # active | disabled
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    failing_since: Mapped[datetime | None] = mapped_column()
    last_success_at: Mapped[datetime | None] = mapped_column()
    last_delivery_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDeliveryRow(Base):
    """One event for one endpoint, delivered at least once. The unique (endpoint, event)
    pair makes the fan-out idempotent; `locked_until` is the lease of the dispatcher
    attempting it, so a dispatcher that dies mid-attempt leaves it to another."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | retrying | delivered | failed
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    http_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)  # the first 1 KB
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerRow(Base):
    """A live worker process: its heartbeat, so /ready can tell that nothing consumes."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:random
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TrackingSessionRow(Base):
    """A tracking session (Media Jay's): no personal data unless the client sent a user
    id, which it may only do with the user's consent. No address, no user agent."""

    __tablename__ = "tracking_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    playout_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None] = mapped_column()


class PlaybackSessionRow(Base):
    """One player's playback of one asset's package (EncoraStream's stream session).
    `last_heartbeat_at`, `position_s` and `is_paused` are written by the flush, from the
    buffered heartbeats; `expires_at` and `refresh_before` are its URLs'."""

    __tablename__ = "playback_sessions"
    __table_args__ = (
        Index("ix_playback_sessions_device", "device_id", "status"),
        Index("ix_playback_sessions_user", "user_id", "status"),
        Index("ix_playback_sessions_status_created", "status", "created_at"),
        Index("ix_playback_sessions_asset_created", "asset_id", "created_at"),
        Index("ix_playback_sessions_ended", "ended_at"),
        Index("ix_playback_sessions_tracking", "tracking_session_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64))
    package_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(128))
    tracking_session_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(64))  # the API key that made it
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # active | ended
    end_reason: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    position_s: Mapped[float | None] = mapped_column(Float)
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column()
    refresh_before: Mapped[datetime] = mapped_column()
    # The audience, resolved when the session was made; the address and the
    # user-agent string it came from are not kept (docs/analytics.md, Privacy).
    country: Mapped[str | None] = mapped_column(String(2))
    device_class: Mapped[str | None] = mapped_column(String(16))
    device_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(128))  # the tracking session's playout


class PlaybackHeartbeatRow(Base):
    """One heartbeat, under the id the API gave it when it took it: a flush that runs
    twice (its worker killed before it confirmed) stores it once."""

    __tablename__ = "playback_heartbeats"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(36), index=True)
    received_at: Mapped[datetime] = mapped_column()
    position_s: Mapped[float] = mapped_column(Float)
    is_paused: Mapped[bool] = mapped_column(Boolean)


class PlayerEventRow(Base):
    """One player event; (session, seq) is its key, so a retried batch is stored once."""

    __tablename__ = "player_events"

    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column()
    position_s: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EdgeSegmentRequestRow(Base):
    """One media segment the edge delivered to a playback session, from its JSON access
    log; keyed by the SHA-256 of the log line, so a line ingested twice counts once.
    No client address or user agent: the log has them, this table never."""

    __tablename__ = "edge_segment_requests"

    line_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    asset_id: Mapped[str] = mapped_column(String(64))
    package_id: Mapped[str] = mapped_column(String(64))
    representation: Mapped[int] = mapped_column(Integer)
    rendition: Mapped[str] = mapped_column(String(128))
    segment_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    from_s: Mapped[float] = mapped_column(Float)
    to_s: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[datetime] = mapped_column()


class EdgeLogFileRow(Base):
    """An edge log object of the store's edge-log prefix, and how far it was ingested (a
    log that grew is read on from there; one that shrank, replaced, from the start)."""

    __tablename__ = "edge_log_files"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    offset_bytes: Mapped[int] = mapped_column(BigInteger)  # read up to here, whole lines
    # The SHA-256 of its first `head_bytes` (at most 1 KiB of what was read): while the
    # object begins so, it is the same log, grown.
    head_sha256: Mapped[str] = mapped_column(String(64))
    head_bytes: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    new_requests: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)


class ViewMarkRow(Base):
    """A session whose view must be derived (again): something of it was written."""

    __tablename__ = "view_marks"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(index=True)


class ViewRow(Base):
    """One playback session's view of its asset (pipeline/views.py), id = session id."""

    __tablename__ = "views"
    __table_args__ = (
        Index("ix_views_started_at", "started_at"),
        Index("ix_views_asset_started", "asset_id", "started_at"),
        Index("ix_views_viewer", "viewer_id"),
        {"postgresql_partition_by": "RANGE (started_at)"},  # monthly: storage/views.py
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64))
    viewer_id: Mapped[str] = mapped_column(String(160))
    authenticated: Mapped[bool] = mapped_column(Boolean)
    device_id: Mapped[str] = mapped_column(String(128))
    country: Mapped[str | None] = mapped_column(String(2))
    device_class: Mapped[str] = mapped_column(String(16))
    device_info: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(128))
    protocol: Mapped[str | None] = mapped_column(String(8))
    rendition: Mapped[str | None] = mapped_column(String(32))
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    # In the primary key because PostgreSQL partitions on it.
    started_at: Mapped[datetime] = mapped_column(primary_key=True)
    finished_at: Mapped[datetime | None] = mapped_column()
    last_activity_at: Mapped[datetime] = mapped_column()
    watched_ms: Mapped[int] = mapped_column(BigInteger)
    counted: Mapped[bool] = mapped_column(Boolean)
    completed: Mapped[bool] = mapped_column(Boolean)
    startup_ms: Mapped[int | None] = mapped_column(Integer)
    playing_ms: Mapped[int] = mapped_column(BigInteger)
    rebuffer_ms: Mapped[int] = mapped_column(BigInteger)
    rebuffer_count: Mapped[int] = mapped_column(Integer)
    failed: Mapped[bool] = mapped_column(Boolean)
    avg_bitrate: Mapped[int | None] = mapped_column(BigInteger)
    coverage: Mapped[str | None] = mapped_column(String(32))  # percents watched, hex bits


class ViewSectionRow(Base):
    """One section of a view, as IBM's `/views` lists them (one item a section)."""

    __tablename__ = "view_sections"
    __table_args__ = (
        Index("ix_view_sections_started_at", "started_at"),
        {"postgresql_partition_by": "RANGE (started_at)"},
    )

    view_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    from_s: Mapped[float] = mapped_column(Float)
    to_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(primary_key=True)
    finished_at: Mapped[datetime | None] = mapped_column()  # None: the view is unfinished


class ViewRollupRow(Base):
    """One bucket's aggregate of counted views (`level` h: an hour, d: a UTC day) for
    one asset (`asset_id` "" for all) and one dimension value (`dimension` "" for the
    whole bucket). Unique counts are HyperLogLog sketches (Apache DataSketches),
    unioned over the buckets of a range."""

    __tablename__ = "view_rollups"
    # Queries ask for one dimension of one asset (or all) over a range of buckets: this
    # index finds exactly those rows (the key's order would walk every asset's).
    __table_args__ = (
        Index("ix_view_rollups_lookup", "level", "dimension", "asset_id", "bucket_at"),
    )

    level: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket_at: Mapped[datetime] = mapped_column(primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(128), primary_key=True)
    plays: Mapped[int] = mapped_column(Integer)  # views started, counted or not
    views: Mapped[int] = mapped_column(Integer)  # counted views
    watched_ms: Mapped[int] = mapped_column(BigInteger)
    completed: Mapped[int] = mapped_column(Integer)
    viewers: Mapped[bytes] = mapped_column(LargeBinary)
    devices: Mapped[bytes] = mapped_column(LargeBinary)
    auth_viewers: Mapped[bytes] = mapped_column(LargeBinary)
    # Quality of experience, of every view (counted or not): sums, and a KLL quantile
    # sketch of startup times.
    playing_ms: Mapped[int] = mapped_column(BigInteger)
    rebuffer_ms: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(Integer)
    bitrate_ms: Mapped[int] = mapped_column(BigInteger)  # sum of bitrate x playing ms
    bitrate_weight_ms: Mapped[int] = mapped_column(BigInteger)
    startups: Mapped[bytes] = mapped_column(LargeBinary)
    # Counted views watching at each percent of the duration (dimension "" rows only).
    retention: Mapped[list[int] | None] = mapped_column(JSON)


class RollupBucketRow(Base):
    """A bucket's state: `version` moves each time a view in it is written,
    `rolled_version` is the version its rollup rows were made from. Rolled and clean
    (equal): queries read the rollup; otherwise they read the raw views."""

    __tablename__ = "rollup_buckets"

    level: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket_at: Mapped[datetime] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    rolled_version: Mapped[int] = mapped_column(BigInteger)
    rolled_at: Mapped[datetime | None] = mapped_column()


class AuditLogRow(Base):
    """One audit log entry; append-only (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created", "created_at", "id"),
        Index("ix_audit_log_actor", "actor_id", "created_at"),
        Index("ix_audit_log_resource", "resource_type", "resource_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action: Mapped[str] = mapped_column(String(100))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(32))
    resource_type: Mapped[str] = mapped_column(String(100))
    resource_id: Mapped[str] = mapped_column(String(200))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # "metadata" is a reserved attribute of declarative models.
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
