"""Playback: tracking sessions, playback sessions, their heartbeats and player events,
and the segment requests the edge logged for them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracking_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("playout_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_tracking_sessions_user_id", "tracking_sessions", ["user_id"])
    op.create_table(
        "playback_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("package_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("tracking_session_id", sa.String(36), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("last_heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("position_s", sa.Float(), nullable=True),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("refresh_before", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_playback_sessions_device", "playback_sessions", ["device_id", "status"])
    op.create_index("ix_playback_sessions_user", "playback_sessions", ["user_id", "status"])
    op.create_index(
        "ix_playback_sessions_status_created", "playback_sessions", ["status", "created_at"]
    )
    op.create_index(
        "ix_playback_sessions_asset_created", "playback_sessions", ["asset_id", "created_at"]
    )
    op.create_table(
        "playback_heartbeats",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("position_s", sa.Float(), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_playback_heartbeats_session_id", "playback_heartbeats", ["session_id"])
    op.create_table(
        "player_events",
        sa.Column("session_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("position_s", sa.Float(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_table(
        "edge_segment_requests",
        sa.Column("line_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("package_id", sa.String(64), nullable=False),
        sa.Column("representation", sa.Integer(), nullable=False),
        sa.Column("rendition", sa.String(128), nullable=False),
        sa.Column("segment_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("from_s", sa.Float(), nullable=False),
        sa.Column("to_s", sa.Float(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_edge_segment_requests_session_id", "edge_segment_requests", ["session_id"]
    )
    op.create_table(
        "edge_log_files",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("offset_bytes", sa.BigInteger(), nullable=False),
        sa.Column("head_sha256", sa.String(64), nullable=False),
        sa.Column("head_bytes", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("new_requests", sa.Integer(), nullable=False),
        sa.Column("ingested_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("edge_log_files")
    op.drop_index("ix_edge_segment_requests_session_id", "edge_segment_requests")
    op.drop_table("edge_segment_requests")
    op.drop_table("player_events")
    op.drop_index("ix_playback_heartbeats_session_id", "playback_heartbeats")
    op.drop_table("playback_heartbeats")
    for name in ("device", "user", "status_created", "asset_created"):
        op.drop_index(f"ix_playback_sessions_{name}", "playback_sessions")
    op.drop_table("playback_sessions")
    op.drop_index("ix_tracking_sessions_user_id", "tracking_sessions")
    op.drop_table("tracking_sessions")
