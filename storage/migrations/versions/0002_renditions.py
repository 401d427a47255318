"""Renditions: one row per (asset, spec), unique so it is created exactly once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "renditions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "asset_id", sa.String(64), sa.ForeignKey("assets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("spec_id", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("requested", sa.JSON(), nullable=False),
        sa.Column("adjustments", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("storage_key", sa.String(512)),
        sa.Column("codec", sa.String(64)),
        sa.Column("bitrate_bps", sa.BigInteger()),
        sa.Column("channels", sa.Integer()),
        sa.Column("sample_rate_hz", sa.Integer()),
        sa.Column("duration_ms", sa.BigInteger()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("sha256", sa.String(64)),
        sa.Column("integrated_lufs", sa.Float()),
        sa.Column("true_peak_dbtp", sa.Float()),
        sa.Column("error_name", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("asset_id", "spec_id", name="uq_renditions_asset_spec"),
    )
    op.create_index("ix_renditions_asset_id", "renditions", ["asset_id"])
    op.create_index("ix_renditions_job_id", "renditions", ["job_id"])


def downgrade() -> None:
    op.drop_table("renditions")
