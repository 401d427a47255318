"""Webhook endpoints: register, read, list, change, delete, rotate the secret; the
delivery log of an endpoint, redelivery and a test ping.

Writes need an admin key, reads any key. A secret is shown in full only by the
answers of create and rotate-secret. The checks and views are
workers/webhook_admin.py's, shared with the CLI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from mediamill.api.deps import AdminActor, ReadKey, RuntimeDep, SessionDep
from mediamill.schemas.audit import AuditAction
from mediamill.schemas.webhooks import (
    CreateWebhookRequest,
    DeliveryStatus,
    UpdateWebhookRequest,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointPage,
    WebhookEndpointWithSecret,
)
from mediamill.storage import audit
from mediamill.storage.webhooks import MAX_PAGE_SIZE
from mediamill.workers import webhook_admin

router = APIRouter(prefix="/v0/webhooks", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64)]


def _json(body: dict, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)


@router.post("", status_code=201, response_model=WebhookEndpointWithSecret)
def create_webhook(rt: RuntimeDep, body: CreateWebhookRequest, actor: AdminActor) -> JSONResponse:
    """Register an endpoint. 201 with its `secret`, shown this once; later reads show
    only `secretHint`. The URL must be https on a public address (hosts in
    MEDIAMILL_WEBHOOK_ALLOW_HOSTS excepted); unknown event types are a 400."""
    with rt.db.session() as s:
        created = webhook_admin.create_endpoint(
            s, rt.settings, url=body.url, events=body.events, description=body.description
        )
        audit.record(
            s, actor, AuditAction.WEBHOOK_CREATED, "webhook", created.id,
            {"url": created.url, "events": list(created.events)},
        )
    response = _json(created.to_json_dict(), 201)
    response.headers["Location"] = f"{router.prefix}/{created.id}"
    return response


@router.get("", response_model=WebhookEndpointPage)
def list_webhooks(
    s: SessionDep, _p: ReadKey, limit: Limit = 50, cursor: Cursor = None
) -> JSONResponse:
    """Endpoints, newest first; `nextCursor` fetches the next page, null on the last."""
    data, next_cursor = webhook_admin.list_endpoints(s, limit=limit, cursor=cursor)
    return _json({"data": [d.to_json_dict() for d in data], "nextCursor": next_cursor})


@router.get("/{webhook_id}", response_model=WebhookEndpoint)
def get_webhook(s: SessionDep, webhook_id: str, _p: ReadKey) -> JSONResponse:
    """One endpoint (its `secretHint`, never the secret); 404 if unknown."""
    return _json(webhook_admin.get_endpoint(s, webhook_id).to_json_dict())


@router.patch("/{webhook_id}", response_model=WebhookEndpoint)
def update_webhook(
    rt: RuntimeDep,
    webhook_id: str, body: UpdateWebhookRequest, actor: AdminActor
) -> JSONResponse:
    """Change url (checked like a new one), events, description or `status`
    (active | disabled); fields not given stay."""
    changes = {f: getattr(body, f) for f in body.model_fields_set}
    with rt.db.session() as s:
        updated = webhook_admin.update_endpoint(s, rt.settings, webhook_id, changes)
        audit.record(
            s, actor, AuditAction.WEBHOOK_UPDATED, "webhook", webhook_id,
            {"changed": sorted(body.model_dump(include=set(changes), by_alias=True))},
        )
        return _json(updated.to_json_dict())


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(rt: RuntimeDep, webhook_id: str, actor: AdminActor) -> Response:
    """Delete an endpoint and its delivery log; 404 if unknown."""
    with rt.db.session() as s:
        webhook_admin.delete_endpoint(s, webhook_id)
        audit.record(s, actor, AuditAction.WEBHOOK_DELETED, "webhook", webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookEndpointWithSecret)
def rotate_webhook_secret(rt: RuntimeDep, webhook_id: str, actor: AdminActor) -> JSONResponse:
    """A new secret, shown this once. Until `previousSecretExpiresAt`
    (MEDIAMILL_WEBHOOK_ROTATION_GRACE_S, 24 h by default) deliveries are signed with
    both the old and the new one."""
    with rt.db.session() as s:
        rotated = webhook_admin.rotate_secret(s, rt.settings, webhook_id)
        audit.record(s, actor, AuditAction.WEBHOOK_SECRET_ROTATED, "webhook", webhook_id)
        return _json(rotated.to_json_dict())


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryPage)
def list_webhook_deliveries(
    s: SessionDep,
    webhook_id: str,
    _p: ReadKey,
    status: DeliveryStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    """The endpoint's delivery log, newest first, optionally of one status, with each
    delivery's latest attempt (HTTP status, first 1 KB of the answer, duration)."""
    data, next_cursor = webhook_admin.list_deliveries(
        s, webhook_id, status=status, limit=limit, cursor=cursor
    )
    return _json({"data": [d.to_json_dict() for d in data], "nextCursor": next_cursor})


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDelivery,
)
def redeliver_webhook(
    rt: RuntimeDep,
    webhook_id: str, delivery_id: str, actor: AdminActor
) -> JSONResponse:
    """Queue a delivery again, due now, same event (same `webhook-id`). 202; 409 while
    the endpoint is disabled."""
    with rt.db.session() as s:
        delivery = webhook_admin.redeliver(s, webhook_id, delivery_id)
        audit.record(
            s, actor, AuditAction.WEBHOOK_REDELIVERED, "webhook", webhook_id,
            {"deliveryId": delivery_id},
        )
        return _json(delivery.to_json_dict(), 202)


@router.post("/{webhook_id}/test", status_code=202, response_model=WebhookDelivery)
def test_webhook(rt: RuntimeDep, webhook_id: str, actor: AdminActor) -> JSONResponse:
    """Send a synthetic `ping` event to this endpoint alone. 202 with the new delivery;
    409 while the endpoint is disabled."""
    with rt.db.session() as s:
        delivery = webhook_admin.send_test_ping(s, webhook_id)
        audit.record(s, actor, AuditAction.WEBHOOK_TESTED, "webhook", webhook_id)
        return _json(delivery.to_json_dict(), 202)
