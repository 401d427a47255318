"""Legacy assets: files of the legacy media cache, keyed by legacy track token.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "legacy_assets",
        sa.Column("legacy_track_token", sa.String(128), primary_key=True),
        sa.Column("legacy_asset_id", sa.String(64)),
        sa.Column("original_filename", sa.String(512)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_legacy_assets_legacy_asset_id", "legacy_assets", ["legacy_asset_id"])


def downgrade() -> None:
    op.drop_table("legacy_assets")
