"""Assets record which audio and video track they were made from, and why.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("assets", sa.Column("tracks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("assets", "tracks")
