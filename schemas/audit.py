"""The audit log (EncoraStream's shape, camelCase as the v0 API): who did what to
which resource, from where, recorded in the same transaction as the action and never
changed afterwards.

Actions are dotted, resource first (`webhook.created`), so `action=webhook.` filters a
family. The actor of an API request is its key's client id and scope; of the CLI,
`cli` and `operator`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from mediamill.schemas.base import CamelModel

MAX_USER_AGENT_CHARS = 512


class AuditAction(StrEnum):
    API_KEY_CREATED = "apiKey.created"
    API_KEY_REVOKED = "apiKey.revoked"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_SECRET_ROTATED = "webhook.secretRotated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_REDELIVERED = "webhook.redelivered"
    WEBHOOK_TESTED = "webhook.tested"
    ASSET_DELETED = "asset.deleted"
    LEGACY_ASSET_CREATED = "legacyAsset.created"
    LEGACY_ASSET_UPDATED = "legacyAsset.updated"
    LEGACY_TRACK_MAPPED = "legacyTrack.mapped"
    UPLOAD_CANCELLED = "upload.cancelled"
    JOB_CANCELLED = "job.cancelled"
    JOB_RETRIED = "job.retried"
    VIEWER_ERASED = "viewer.erased"


class AuditActor(CamelModel):
    """Who acts, and the request they act through (none for the CLI)."""

    actor_id: str
    actor_role: str
    ip_address: str | None = None
    user_agent: str | None = Field(default=None, max_length=MAX_USER_AGENT_CHARS)
    request_id: str | None = None


CLI_ACTOR = AuditActor(actor_id="cli", actor_role="operator")


class AuditLogEntry(CamelModel):
    id: str
    action: str
    actor_id: str
    actor_role: str
    resource_type: str
    resource_id: str
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
