"""Initial schema: assets, legacy track tokens, jobs, event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("original_filename", sa.String(512)),
        sa.Column("asset_type", sa.String(128)),
        sa.Column("container", sa.String(64)),
        sa.Column("codec", sa.String(64)),
        sa.Column("bitrate_bps", sa.BigInteger()),
        sa.Column("channels", sa.Integer()),
        sa.Column("channel_layout", sa.String(64)),
        sa.Column("sample_rate_hz", sa.Integer()),
        sa.Column("duration_ms", sa.BigInteger()),
        sa.Column("integrated_lufs", sa.Float()),
        sa.Column("true_peak_dbtp", sa.Float()),
        sa.Column("loudness_range_lu", sa.Float()),
        sa.Column("sample_peak_dbfs", sa.Float()),
        sa.Column("max_momentary_lufs", sa.Float()),
        sa.Column("max_short_term_lufs", sa.Float()),
        sa.Column("video", sa.JSON()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_name", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_assets_status", "assets", ["status"])
    op.create_table(
        "legacy_track_tokens",
        sa.Column("token", sa.String(128), primary_key=True),
        sa.Column(
            "asset_id",
            sa.String(64),
            sa.ForeignKey("assets.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("asset_id", sa.String(64)),
        sa.Column("parent_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON()),
        sa.Column("error_name", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("message_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("enqueued_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_jobs_type", "jobs", ["type"])
    op.create_index("ix_jobs_asset_id", "jobs", ["asset_id"])
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.create_index("ix_jobs_status_enqueued", "jobs", ["status", "enqueued_at"])
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("published_at", UTCDateTime()),
    )
    op.create_index("ix_outbox_events_type", "outbox_events", ["type"])
    op.create_index("ix_outbox_events_published_at", "outbox_events", ["published_at"])


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("jobs")
    op.drop_table("legacy_track_tokens")
    op.drop_table("assets")
