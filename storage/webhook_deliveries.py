"""Webhook deliveries on the metadata DB: fan-out from the outbox, leases, attempts.

Every function takes an open `Session` (see `Database.session`). The dispatcher
(workers/webhooks.py) fans unpublished outbox events out to subscribed endpoints
as one delivery each (idempotent on (endpoint, event)), then claims due deliveries
with a lease (`locked_until`) so two dispatchers never attempt the same one at once
and a dead dispatcher's claim lapses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ModelNotFoundError
from mediamill.storage import outbox
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import OutboxEventRow, WebhookDeliveryRow, WebhookEndpointRow

PENDING = "pending"
RETRYING = "retrying"
DELIVERED = "delivered"
FAILED = "failed"
DUE_STATUSES = (PENDING, RETRYING)

ACTIVE = "active"
DISABLED = "disabled"

PING = "ping"
ENDPOINT_DISABLED = "endpoint.disabled"


# ---- used by the endpoint API (storage/webhooks.py) ---------------------------------------


def active_secrets(endpoint: WebhookEndpointRow, now: datetime | None = None) -> list[str]:
    """The secrets signing a delivery now, newest first: the current one, plus the
    previous one while its rotation grace period lasts."""
    now = now or utcnow()
    secrets = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        secrets.append(endpoint.previous_secret)
    return secrets


def _new_delivery(endpoint_id: str, event: OutboxEventRow, now: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "endpoint_id": endpoint_id,
        "event_id": event.id,
        "event_type": event.type,
        "status": PENDING,
        "attempt_count": 0,
        "next_attempt_at": now,
        "created_at": now,
        "modified_at": now,
    }


def create_ping_delivery(session: Session, endpoint_id: str) -> str:
    """A synthetic `ping` event for one endpoint (already published, so no other
    endpoint gets it) and its delivery, due now. Returns the delivery id."""
    endpoint = session.get(WebhookEndpointRow, endpoint_id)
    if endpoint is None:
        raise ModelNotFoundError(f"no webhook endpoint {endpoint_id}")
    now = utcnow()
    event = outbox.add_event(session, PING, {"webhookId": endpoint_id})
    event.published_at = now
    session.flush()
    row = WebhookDeliveryRow(**_new_delivery(endpoint_id, event, now))
    session.add(row)
    session.flush()
    return row.id


def redeliver(session: Session, delivery_id: str) -> WebhookDeliveryRow:
    """Queue a delivery again, due now, with a fresh retry schedule (its event id, and
    so its `webhook-id`, stay the same)."""
    row = session.get(WebhookDeliveryRow, delivery_id)
    if row is None:
        raise ModelNotFoundError(f"no webhook delivery {delivery_id}")
    now = utcnow()
    row.status = PENDING
    row.attempt_count = 0
    row.next_attempt_at = now
    row.locked_until = None
    row.delivered_at = None
    row.modified_at = now
    session.flush()
    return row


def subscribed(endpoint: WebhookEndpointRow, event_type: str) -> bool:
    """Whether the endpoint's `events` {"types": [...]} includes the type ("*" = all)."""
    types = (endpoint.events or {}).get("types") or []
    return "*" in types or event_type in types


def _event_endpoint_id(event: OutboxEventRow) -> str | None:
    """The endpoint an `endpoint.disabled` event is about (never delivered to itself)."""
    if event.type != ENDPOINT_DISABLED:
        return None
    webhook = (event.data or {}).get("webhook") or {}
    return webhook.get("id") if isinstance(webhook, dict) else None


# ---- fan-out --------------------------------------------------------------------------------


def fan_out(session: Session, batch: int = 100) -> int:
    """Turn up to `batch` unpublished outbox events (oldest first) into one delivery per
    active subscribed endpoint and mark them published, in the caller's transaction.
    Idempotent: the (endpoint, event) pair is unique, so a crash before the commit just
    runs it again. Returns the number of events published."""
    stmt = (
        select(OutboxEventRow)
        .where(OutboxEventRow.published_at.is_(None))
        .order_by(OutboxEventRow.created_at, OutboxEventRow.id)
        .limit(batch)
    )
    if session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    events = list(session.scalars(stmt).all())
    if not events:
        return 0
    endpoints = list(
        session.scalars(select(WebhookEndpointRow).where(WebhookEndpointRow.status == ACTIVE))
    )
    now = utcnow()
    rows = [
        _new_delivery(endpoint.id, event, now)
        for event in events
        for endpoint in endpoints
        if subscribed(endpoint, event.type) and endpoint.id != _event_endpoint_id(event)
    ]
    if rows:
        insert = dialect_insert(session)(WebhookDeliveryRow).values(rows)
        session.execute(insert.on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"]))
    # Conditional, so on SQLite (no row locks) a concurrent dispatcher that already
    # published an event is not counted twice; its deliveries were deduplicated above.
    result = session.execute(
        update(OutboxEventRow)
        .where(OutboxEventRow.id.in_([e.id for e in events]), OutboxEventRow.published_at.is_(None))
        .values(published_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


# ---- attempts -------------------------------------------------------------------------------


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        WebhookDeliveryRow.status.in_(DUE_STATUSES),
        WebhookDeliveryRow.next_attempt_at <= now,
        or_(WebhookDeliveryRow.locked_until.is_(None), WebhookDeliveryRow.locked_until < now),
    )


def claim_due(session: Session, lease_s: float, limit: int) -> list[str]:
    """Lease up to `limit` due deliveries of active endpoints (oldest due first) for
    `lease_s`. Each is taken by a conditional UPDATE, so of two dispatchers exactly one
    gets it; one that dies holding it lets the lease lapse. Returns their ids."""
    if limit <= 0:
        return []
    now = utcnow()
    candidates = list(
        session.scalars(
            select(WebhookDeliveryRow.id)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
            .where(_due(now), WebhookEndpointRow.status == ACTIVE)
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.created_at)
            .limit(limit)
        )
    )
    claimed = []
    locked_until = now + timedelta(seconds=lease_s)
    for delivery_id in candidates:
        result = session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_id, _due(now))
            .values(locked_until=locked_until)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            claimed.append(delivery_id)
    return claimed


@dataclass(frozen=True)
class Attempt:
    """Everything a dispatcher needs to send one delivery, read from the DB at claim."""

    delivery_id: str
    endpoint_id: str
    url: str
    secrets: list[str]
    event_id: str
    event_type: str
    event_created_at: datetime
    event_data: dict[str, Any]
    attempt_number: int  # 1 for the first attempt


def load_attempt(session: Session, delivery_id: str) -> Attempt | None:
    """The claimed delivery with its endpoint and event (None if any is gone)."""
    delivery = session.get(WebhookDeliveryRow, delivery_id)
    if delivery is None:
        return None
    endpoint = session.get(WebhookEndpointRow, delivery.endpoint_id)
    event = session.get(OutboxEventRow, delivery.event_id)
    if endpoint is None or event is None:
        if event is None:
            delivery.status, delivery.error = FAILED, "its event no longer exists"
            delivery.locked_until = None
        return None
    return Attempt(
        delivery_id=delivery.id,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        secrets=active_secrets(endpoint),
        event_id=event.id,
        event_type=event.type,
        event_created_at=event.created_at,
        event_data=dict(event.data or {}),
        attempt_number=delivery.attempt_count + 1,
    )


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt gave: a status (None when no answer), the start of the
    answer, how long it took, an error text, and a `Retry-After` in seconds."""

    http_status: int | None
    response_excerpt: str | None
    duration_ms: int
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


@dataclass(frozen=True)
class Policy:
    """The retry and disable rules (from settings)."""

    retry_schedule_s: list[float]
    disable_after_s: float
    jitter: float = 0.1


def parse_schedule(text: str) -> list[float]:
    """`"5,300,1800"` -> [5.0, 300.0, 1800.0]."""
    return [float(part) for part in (p.strip() for p in text.split(",")) if part]


def retry_delay_s(
    policy: Policy, attempt_number: int, outcome: Outcome, rand: float
) -> float | None:
    """Seconds until the next attempt after failed attempt `attempt_number` (1-based),
    None when the schedule is exhausted. `rand` in [0, 1) picks the jitter; a larger
    `Retry-After` on 429/503 wins."""
    if attempt_number > len(policy.retry_schedule_s):
        return None
    base = policy.retry_schedule_s[attempt_number - 1]
    delay = base * (1 + policy.jitter * (2 * rand - 1))
    if outcome.http_status in (429, 503) and outcome.retry_after_s is not None:
        delay = max(delay, outcome.retry_after_s)
    return max(delay, 0.0)


def disable_endpoint(session: Session, endpoint: WebhookEndpointRow, reason: str) -> None:
    """Disable an endpoint and record `endpoint.disabled` (fanned out to the others)."""
    if endpoint.status == DISABLED:
        return
    now = utcnow()
    endpoint.status = DISABLED
    endpoint.disabled_reason = reason
    endpoint.modified_at = now
    outbox.add_event(
        session,
        ENDPOINT_DISABLED,
        {"webhook": {"id": endpoint.id, "url": endpoint.url, "disabledReason": reason}},
    )


def record_attempt(
    session: Session, delivery_id: str, outcome: Outcome, policy: Policy, rand: float
) -> str | None:
    """Record one attempt's outcome on the delivery and its endpoint, schedule the retry
    or settle the delivery, and apply the 410 and disable-after rules. Returns the
    delivery's new status."""
    delivery = session.get(WebhookDeliveryRow, delivery_id)
    if delivery is None:
        return None
    if delivery.status not in DUE_STATUSES:
        # Settled meanwhile by another dispatcher that took over a lapsed lease.
        return delivery.status
    endpoint = session.get(WebhookEndpointRow, delivery.endpoint_id)
    now = utcnow()
    delivery.attempt_count += 1
    delivery.http_status = outcome.http_status
    delivery.response_excerpt = outcome.response_excerpt
    delivery.duration_ms = outcome.duration_ms
    delivery.error = outcome.error
    delivery.locked_until = None
    delivery.modified_at = now
    if endpoint is not None:
        endpoint.last_delivery_at = now
    if outcome.delivered:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = DELIVERED, now, None
        if endpoint is not None:
            endpoint.last_success_at, endpoint.failing_since = now, None
        return delivery.status
    if endpoint is not None and endpoint.failing_since is None:
        endpoint.failing_since = now
    if outcome.http_status == 410:
        delivery.status, delivery.next_attempt_at = FAILED, None
        if endpoint is not None:
            disable_endpoint(session, endpoint, "the endpoint answered 410 Gone")
        return delivery.status
    delay = retry_delay_s(policy, delivery.attempt_count, outcome, rand)
    if delay is None:
        delivery.status, delivery.next_attempt_at = FAILED, None
    else:
        delivery.status = RETRYING
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    if (
        endpoint is not None
        and endpoint.failing_since is not None
        and (now - endpoint.failing_since).total_seconds() >= policy.disable_after_s
    ):
        disable_endpoint(
            session,
            endpoint,
            f"failing without a success since {endpoint.failing_since.isoformat()}",
        )
    return delivery.status
