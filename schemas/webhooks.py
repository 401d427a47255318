"""Webhook endpoints and their delivery log: request bodies and the views the API and
CLI show. A secret appears in full only in the answer that created it (create,
rotate-secret); every other read shows `secretHint`, its last 4 characters."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from mediamill.schemas.base import CamelModel, RequestModel

# The event types of DESIGN.md an endpoint may subscribe to; `*` subscribes to all.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "asset.created",
    "asset.analysed",
    "asset.ready",
    "asset.deleted",
    "rendition.ready",
    "rendition.failed",
    "package.ready",
    "job.failed",
    "upload.completed",
    "ping",
    "endpoint.disabled",
)
ALL_EVENTS = "*"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 1000
MAX_EVENTS = 32

WebhookStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["pending", "delivered", "failed", "retrying"]


class CreateWebhookRequest(RequestModel):
    """`POST /v0/webhooks`: where to deliver and which event types."""

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    events: list[str] = Field(min_length=1, max_length=MAX_EVENTS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)


class UpdateWebhookRequest(RequestModel):
    """`PATCH /v0/webhooks/{id}`: only the fields given change."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    events: list[str] | None = Field(default=None, min_length=1, max_length=MAX_EVENTS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    status: WebhookStatus | None = None


class WebhookEndpoint(CamelModel):
    """An endpoint as every read shows it (never the secret)."""

    id: str
    url: str
    events: list[str]
    description: str | None = None
    status: WebhookStatus
    secret_hint: str
    created_at: datetime
    updated_at: datetime
    last_delivery_at: datetime | None = None
    disabled_reason: str | None = None


class WebhookEndpointWithSecret(WebhookEndpoint):
    """The answer to create and rotate-secret: the only time the secret is shown."""

    secret: str
    previous_secret_expires_at: datetime | None = None


class WebhookDelivery(CamelModel):
    """One event for one endpoint, with its latest attempt."""

    id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    http_status: int | None = None
    response_excerpt: str | None = None
    duration_ms: int | None = None
    next_retry_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    error: str | None = None


class WebhookEndpointPage(CamelModel):
    data: list[WebhookEndpoint]
    next_cursor: str | None = None


class WebhookDeliveryPage(CamelModel):
    data: list[WebhookDelivery]
    next_cursor: str | None = None
