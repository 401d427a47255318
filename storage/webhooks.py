"""Webhook endpoints on the metadata DB: create, read, list, update, delete, rotate,
and the delivery log of one endpoint.

Every function takes an open `Session` and works on rows; checking URLs and making
secrets is workers/webhook_admin.py's part. Lists are newest first, keyset-paginated
on (created_at, id) with the last id of a page as the cursor; a cursor that names
nothing of the list is refused instead of silently restarting at the first page.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import InvalidRequestError, ModelNotFoundError
from mediamill.storage.models import WebhookDeliveryRow, WebhookEndpointRow

MAX_PAGE_SIZE = 200
ACTIVE = "active"
DISABLED = "disabled"
# Fields an update may set.
UPDATABLE = frozenset({"url", "events", "description", "status"})
DISABLED_BY_ADMIN = "disabled by an admin"


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE_SIZE}")


def _unknown_cursor() -> InvalidRequestError:
    return InvalidRequestError("unknown cursor: pass the nextCursor of a previous page")


def create_endpoint(
    session: Session, *, url: str, events: list[str], description: str | None, secret: str
) -> WebhookEndpointRow:
    """A new active endpoint (url and events already checked)."""
    now = utcnow()
    row = WebhookEndpointRow(
        id=str(uuid.uuid4()),
        url=url,
        events={"types": list(events)},
        description=description,
        status=ACTIVE,
        secret=secret,
        created_at=now,
        modified_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_endpoint(
    session: Session, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpointRow:
    """One endpoint, or ModelNotFoundError."""
    stmt = select(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise ModelNotFoundError(f"Webhook endpoint not found ({endpoint_id})", id=endpoint_id)
    return row


def endpoint_events(row: WebhookEndpointRow) -> list[str]:
    return list((row.events or {}).get("types") or [])


def list_endpoints(
    session: Session, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[WebhookEndpointRow], str | None]:
    """Endpoints, newest first, one page: (rows, next cursor or None)."""
    _check_limit(limit)
    stmt = select(WebhookEndpointRow).order_by(
        WebhookEndpointRow.created_at.desc(), WebhookEndpointRow.id.desc()
    )
    if cursor is not None:
        anchor = session.get(WebhookEndpointRow, cursor)
        if anchor is None:
            raise _unknown_cursor()
        stmt = stmt.where(
            or_(
                WebhookEndpointRow.created_at < anchor.created_at,
                and_(
                    WebhookEndpointRow.created_at == anchor.created_at,
                    WebhookEndpointRow.id < anchor.id,
                ),
            )
        )
    rows = list(session.scalars(stmt.limit(limit + 1)).all())
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def update_endpoint(
    session: Session, endpoint_id: str, changes: dict[str, Any]
) -> WebhookEndpointRow:
    """Apply `changes` (any of url, events, description, status; already checked).
    Disabling records why; enabling again clears that and the failure streak."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise InvalidRequestError(f"cannot change {', '.join(sorted(unknown))}")
    row = get_endpoint(session, endpoint_id, for_update=True)
    if "url" in changes:
        row.url = changes["url"]
    if "events" in changes:
        row.events = {"types": list(changes["events"])}
    if "description" in changes:
        row.description = changes["description"]
    status = changes.get("status")
    if status is not None and status != row.status:
        if status == DISABLED:
            row.status, row.disabled_reason = DISABLED, DISABLED_BY_ADMIN
        elif status == ACTIVE:
            row.status, row.disabled_reason, row.failing_since = ACTIVE, None, None
        else:
            raise InvalidRequestError(f"status must be {ACTIVE} or {DISABLED}")
    row.modified_at = utcnow()
    session.flush()
    return row


def delete_endpoint(session: Session, endpoint_id: str) -> None:
    """Delete an endpoint and its delivery log (the events themselves stay)."""
    get_endpoint(session, endpoint_id, for_update=True)
    session.execute(
        delete(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.endpoint_id == endpoint_id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(WebhookEndpointRow)
        .where(WebhookEndpointRow.id == endpoint_id)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()


def rotate_secret(
    session: Session, endpoint_id: str, new_secret: str, previous_expires_at: datetime
) -> WebhookEndpointRow:
    """Make `new_secret` current; the current one keeps signing (as the previous
    secret) until `previous_expires_at`. A previous secret of an earlier rotation is
    dropped."""
    row = get_endpoint(session, endpoint_id, for_update=True)
    row.previous_secret = row.secret
    row.previous_secret_expires_at = previous_expires_at
    row.secret = new_secret
    row.modified_at = utcnow()
    session.flush()
    return row


def get_delivery(session: Session, endpoint_id: str, delivery_id: str) -> WebhookDeliveryRow:
    """One delivery of one endpoint, or ModelNotFoundError (also when it belongs to
    another endpoint)."""
    row = session.get(WebhookDeliveryRow, delivery_id)
    if row is None or row.endpoint_id != endpoint_id:
        raise ModelNotFoundError(
            f"Webhook delivery not found ({delivery_id}) for endpoint {endpoint_id}",
            id=delivery_id,
        )
    return row


def list_deliveries(
    session: Session,
    endpoint_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[WebhookDeliveryRow], str | None]:
    """One endpoint's deliveries, newest first, optionally of one status; one page."""
    _check_limit(limit)
    get_endpoint(session, endpoint_id)
    stmt = (
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.endpoint_id == endpoint_id)
        .order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id.desc())
    )
    if status is not None:
        stmt = stmt.where(WebhookDeliveryRow.status == status)
    if cursor is not None:
        anchor = session.get(WebhookDeliveryRow, cursor)
        if anchor is None or anchor.endpoint_id != endpoint_id:
            raise _unknown_cursor()
        stmt = stmt.where(
            or_(
                WebhookDeliveryRow.created_at < anchor.created_at,
                and_(
                    WebhookDeliveryRow.created_at == anchor.created_at,
                    WebhookDeliveryRow.id < anchor.id,
                ),
            )
        )
    rows = list(session.scalars(stmt.limit(limit + 1)).all())
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)
