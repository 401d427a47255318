"""Views: the audience of a playback session, the views derived from sessions, their
sections, and the hourly and daily rollups with their unique-count sketches.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_AUDIENCE = (
    ("country", sa.String(2)),
    ("device_class", sa.String(16)),
    ("device_info", sa.JSON()),
    ("source", sa.String(128)),
)


def upgrade() -> None:
    for name, kind in _AUDIENCE:
        op.add_column("playback_sessions", sa.Column(name, kind, nullable=True))
    # What the raw-retention purge and the erasure look sessions up by.
    op.create_index("ix_playback_sessions_ended", "playback_sessions", ["ended_at"])
    op.create_index("ix_playback_sessions_tracking", "playback_sessions", ["tracking_session_id"])
    op.create_index("ix_tracking_sessions_expires_at", "tracking_sessions", ["expires_at"])
    op.create_table(
        "view_marks",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("marked_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_view_marks_marked_at", "view_marks", ["marked_at"])
    op.create_table(
        "views",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("viewer_id", sa.String(160), nullable=False),
        sa.Column("authenticated", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("device_class", sa.String(16), nullable=False),
        sa.Column("device_info", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("protocol", sa.String(8), nullable=True),
        sa.Column("rendition", sa.String(32), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("started_at", UTCDateTime(), primary_key=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("last_activity_at", UTCDateTime(), nullable=False),
        sa.Column("watched_ms", sa.BigInteger(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("startup_ms", sa.Integer(), nullable=True),
        sa.Column("playing_ms", sa.BigInteger(), nullable=False),
        sa.Column("rebuffer_ms", sa.BigInteger(), nullable=False),
        sa.Column("rebuffer_count", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("avg_bitrate", sa.BigInteger(), nullable=True),
        sa.Column("coverage", sa.String(32), nullable=True),
        postgresql_partition_by="RANGE (started_at)",
    )
    op.create_index("ix_views_started_at", "views", ["started_at"])
    op.create_index("ix_views_asset_started", "views", ["asset_id", "started_at"])
    op.create_index("ix_views_viewer", "views", ["viewer_id"])
    op.create_table(
        "view_sections",
        sa.Column("view_id", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("from_s", sa.Float(), nullable=False),
        sa.Column("to_s", sa.Float(), nullable=False),
        sa.Column("started_at", UTCDateTime(), primary_key=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        postgresql_partition_by="RANGE (started_at)",
    )
    op.create_index("ix_view_sections_started_at", "view_sections", ["started_at"])
    if op.get_bind().dialect.name == "postgresql":
        # Monthly partitions are made ahead by the update_views actor
        # (storage/views.ensure_partitions); a row outside them lands here.
        op.execute("CREATE TABLE views_default PARTITION OF views DEFAULT")
        op.execute("CREATE TABLE view_sections_default PARTITION OF view_sections DEFAULT")
    op.create_table(
        "view_rollups",
        sa.Column("level", sa.String(1), primary_key=True),
        sa.Column("bucket_at", UTCDateTime(), primary_key=True),
        sa.Column("asset_id", sa.String(64), primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(128), primary_key=True),
        sa.Column("plays", sa.Integer(), nullable=False),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("watched_ms", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("viewers", sa.LargeBinary(), nullable=False),
        sa.Column("devices", sa.LargeBinary(), nullable=False),
        sa.Column("auth_viewers", sa.LargeBinary(), nullable=False),
        sa.Column("playing_ms", sa.BigInteger(), nullable=False),
        sa.Column("rebuffer_ms", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("bitrate_ms", sa.BigInteger(), nullable=False),
        sa.Column("bitrate_weight_ms", sa.BigInteger(), nullable=False),
        sa.Column("startups", sa.LargeBinary(), nullable=False),
        sa.Column("retention", sa.JSON(), nullable=True),
    )
    op.create_index(
        "ix_view_rollups_lookup", "view_rollups", ["level", "dimension", "asset_id", "bucket_at"]
    )
    op.create_table(
        "rollup_buckets",
        sa.Column("level", sa.String(1), primary_key=True),
        sa.Column("bucket_at", UTCDateTime(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("rolled_version", sa.BigInteger(), nullable=False),
        sa.Column("rolled_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("rollup_buckets")
    op.drop_index("ix_view_rollups_lookup", "view_rollups")
    op.drop_table("view_rollups")
    op.drop_index("ix_view_sections_started_at", "view_sections")
    op.drop_table("view_sections")
    for name in ("viewer", "asset_started", "started_at"):
        op.drop_index(f"ix_views_{name}", "views")
    op.drop_table("views")
    op.drop_index("ix_view_marks_marked_at", "view_marks")
    op.drop_table("view_marks")
    op.drop_index("ix_tracking_sessions_expires_at", "tracking_sessions")
    op.drop_index("ix_playback_sessions_tracking", "playback_sessions")
    op.drop_index("ix_playback_sessions_ended", "playback_sessions")
    with op.batch_alter_table("playback_sessions") as batch:
        for name, _ in reversed(_AUDIENCE):
            batch.drop_column(name)
