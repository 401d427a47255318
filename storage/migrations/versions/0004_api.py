"""The HTTP API's tables: API keys, upload sessions, bucket events, idempotency keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mediamill.storage.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("asset_type", sa.String(128)),
        sa.Column("legacy_track_token", sa.String(128)),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("upload_url_expires_at", UTCDateTime(), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("asset_id", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_uploads_status", "uploads", ["status"])
    op.create_index("ix_uploads_job_id", "uploads", ["job_id"])
    op.create_table(
        "bucket_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("bucket", "object_key", "version", name="uq_bucket_events_object"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("response", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "client_id", "route", "key", name="uq_idempotency_keys_client_route_key"
        ),
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "bucket_events", "uploads", "api_keys"):
        op.drop_table(table)
