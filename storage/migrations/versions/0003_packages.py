"""Packages: one row per (asset, package id), HLS + DASH over one set of CMAF segments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "asset_id", sa.String(64), sa.ForeignKey("assets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("package_id", sa.String(64), nullable=False),
        sa.Column("renditions", sa.JSON(), nullable=False),
        sa.Column("segment_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("duration_ms", sa.BigInteger()),
        sa.Column("segment_count", sa.Integer()),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("master_key", sa.String(512)),
        sa.Column("manifest_key", sa.String(512)),
        sa.Column("error_name", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("asset_id", "package_id", name="uq_packages_asset_package"),
    )
    op.create_index("ix_packages_asset_id", "packages", ["asset_id"])
    op.create_index("ix_packages_job_id", "packages", ["job_id"])


def downgrade() -> None:
    op.drop_table("packages")
