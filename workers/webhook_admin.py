"""Managing webhook endpoints, shared by the API and the CLI: checks at registration,
secrets, and the views shown to callers.

A URL is checked when registered and whenever it changes: `https` only, no
credentials, at most 2048 characters, and every address its host resolves to must
be public (the judgement of workers/url_source.py; IPv4-mapped IPv6 is refused
outright). Hosts listed in `MEDIAMILL_WEBHOOK_ALLOW_HOSTS` are exempt: they may be
`http` and private (development and tests). The dispatcher checks the address it
connects to again, so a host that resolves differently later gains nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from mediamill.config.settings import Settings
from mediamill.pipeline.webhook_signing import new_secret, secret_hint
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ConflictError, InvalidRequestError
from mediamill.schemas.webhooks import (
    ALL_EVENTS,
    MAX_DESCRIPTION_LENGTH,
    MAX_EVENTS,
    MAX_URL_LENGTH,
    WEBHOOK_EVENT_TYPES,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)
from mediamill.storage import webhook_deliveries
from mediamill.storage import webhooks as store
from mediamill.storage.models import WebhookDeliveryRow, WebhookEndpointRow
from mediamill.workers.url_source import address_allowed, parse_allow_hosts, parse_source_url

log = logging.getLogger(__name__)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_DUE = ("pending", "retrying")


# ---- checks -----------------------------------------------------------------------------


def address_class(address: str) -> str:
    """What kind of non-public address `address` is, for error messages."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"IPv4-mapped IPv6 ({address_class(str(ip.ipv4_mapped))})"
        if ip.sixtofour is not None or ip.teredo is not None:
            return "6to4/Teredo tunnel to a non-public IPv4 address"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT (CGNAT)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    return "public" if ip.is_global else "non-public"


def _refusal(address: str) -> str | None:
    """Why a webhook may not go to `address`, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_class(address)
    if not address_allowed(address):
        return address_class(address)
    return None


def check_webhook_url(url: str, settings: Settings) -> str:
    """`url` if a webhook may be delivered to it, else InvalidRequestError naming why.
    A host that cannot be resolved just now (DNS trouble) is accepted: delivery checks
    it again."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"the webhook URL must be 1 to {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidRequestError(f"the webhook URL is not a valid URL: {exc}") from exc
    try:
        parts.port  # noqa: B018 (raises on an invalid port)
    except ValueError as exc:
        raise InvalidRequestError(f"the webhook URL has an invalid port: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequestError(f"webhook URLs must be https://, not {scheme or url!r}")
    try:
        source = parse_source_url(url)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message.replace("source URL", "webhook URL")) from exc
    if parts.fragment:
        raise InvalidRequestError("the webhook URL must not have a fragment (#...)")
    exempt = source.host.lower() in parse_allow_hosts(settings.webhook_allow_hosts)
    if source.scheme != "https" and not exempt:
        raise InvalidRequestError(
            f"webhook URLs must be https:// ({source.host} is not in MEDIAMILL_WEBHOOK_ALLOW_HOSTS)"
        )
    if exempt:
        return url
    try:
        infos = socket.getaddrinfo(source.host, source.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            # Like a URL ingest: DNS trouble now is no verdict on the host; every
            # delivery resolves and checks it again before connecting.
            log.warning("webhook host %s cannot be resolved now (%s); accepted", source.host, exc)
            return url
        raise InvalidRequestError(f"the webhook host {source.host} does not resolve") from exc
    except (UnicodeError, ValueError) as exc:  # a label IDNA refuses (too long, empty)
        raise InvalidRequestError(f"the webhook host {source.host!r} is not valid") from exc
    for address in dict.fromkeys(str(info[4][0]) for info in infos):
        why = _refusal(address)
        if why is not None:
            where = (
                f"{address} is"
                if address == source.host
                else f"the webhook host {source.host} resolves to {address},"
            )
            raise InvalidRequestError(
                f"{where} a {why} address; webhooks are only delivered to public addresses"
            )
    return url


def check_events(events: list[str]) -> list[str]:
    """The subscribed event types, each known (or `*` for all), duplicates dropped."""
    if not events:
        raise InvalidRequestError("events must name at least one event type (or '*')")
    if len(events) > MAX_EVENTS:
        raise InvalidRequestError(f"at most {MAX_EVENTS} event types")
    unknown = [e for e in events if e != ALL_EVENTS and e not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise InvalidRequestError(
            f"unknown event type {unknown[0][:64]!r}; known: {', '.join(WEBHOOK_EVENT_TYPES)} "
            f"or {ALL_EVENTS!r} for all"
        )
    return list(dict.fromkeys(events))


def _check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidRequestError(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters"
        )
    return description


# ---- views ------------------------------------------------------------------------------


def endpoint_view(row: WebhookEndpointRow) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        url=row.url,
        events=store.endpoint_events(row),
        description=row.description,
        status=row.status,  # type: ignore[arg-type]
        secret_hint=secret_hint(row.secret),
        created_at=row.created_at,
        updated_at=row.modified_at,
        last_delivery_at=row.last_delivery_at,
        disabled_reason=row.disabled_reason,
    )


def _with_secret(row: WebhookEndpointRow, secret: str) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(
        **endpoint_view(row).model_dump(),
        secret=secret,
        previous_secret_expires_at=row.previous_secret_expires_at if row.previous_secret else None,
    )


def delivery_view(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,  # type: ignore[arg-type]
        attempt_count=row.attempt_count or 0,
        http_status=row.http_status,
        response_excerpt=(row.response_excerpt or None) and row.response_excerpt[:1024],
        duration_ms=row.duration_ms,
        next_retry_at=row.next_attempt_at if row.status in _DUE else None,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        error=row.error,
    )


# ---- actions ----------------------------------------------------------------------------


def create_endpoint(
    session: Session,
    settings: Settings,
    *,
    url: str,
    events: list[str],
    description: str | None = None,
) -> WebhookEndpointWithSecret:
    """Register an endpoint; the answer is the only one that shows its secret."""
    url = check_webhook_url(url, settings)
    types = check_events(events)
    secret = new_secret()
    row = store.create_endpoint(
        session, url=url, events=types, description=_check_description(description), secret=secret
    )
    return _with_secret(row, secret)


def update_endpoint(
    session: Session, settings: Settings, endpoint_id: str, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Change url, events, description or status; a new URL is checked like a new one."""
    changes = dict(changes)
    for field in ("url", "events", "status"):
        if field in changes and changes[field] is None:
            raise InvalidRequestError(f"{field} cannot be null")
    store.get_endpoint(session, endpoint_id)  # 404 before any check of the body
    if "url" in changes:
        changes["url"] = check_webhook_url(changes["url"], settings)
    if "events" in changes:
        changes["events"] = check_events(changes["events"])
    if "description" in changes:
        _check_description(changes["description"])
    return endpoint_view(store.update_endpoint(session, endpoint_id, changes))


def rotate_secret(
    session: Session, settings: Settings, endpoint_id: str
) -> WebhookEndpointWithSecret:
    """A new secret (shown once); the old one signs too for `webhook_rotation_grace_s`."""
    secret = new_secret()
    expires = utcnow() + timedelta(seconds=settings.webhook_rotation_grace_s)
    row = store.rotate_secret(session, endpoint_id, secret, expires)
    return _with_secret(row, secret)


def _require_active(row: WebhookEndpointRow) -> None:
    if row.status != store.ACTIVE:
        raise ConflictError(
            f"webhook endpoint {row.id} is disabled ({row.disabled_reason or 'no reason'}): "
            "enable it first (PATCH status=active)"
        )


def send_test_ping(session: Session, endpoint_id: str) -> WebhookDelivery:
    """A synthetic `ping` delivery to one endpoint, due now."""
    _require_active(store.get_endpoint(session, endpoint_id))
    delivery_id = webhook_deliveries.create_ping_delivery(session, endpoint_id)
    return delivery_view(store.get_delivery(session, endpoint_id, delivery_id))


def redeliver(session: Session, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    """Queue one delivery of one endpoint again, due now (same event id)."""
    _require_active(store.get_endpoint(session, endpoint_id))
    store.get_delivery(session, endpoint_id, delivery_id)
    return delivery_view(webhook_deliveries.redeliver(session, delivery_id))


def list_endpoints(
    session: Session, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[WebhookEndpoint], str | None]:
    rows, next_cursor = store.list_endpoints(session, limit=limit, cursor=cursor)
    return [endpoint_view(r) for r in rows], next_cursor


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    return endpoint_view(store.get_endpoint(session, endpoint_id))


def delete_endpoint(session: Session, endpoint_id: str) -> None:
    """Delete an endpoint and its delivery log."""
    store.delete_endpoint(session, endpoint_id)


def list_deliveries(
    session: Session,
    endpoint_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[WebhookDelivery], str | None]:
    rows, next_cursor = store.list_deliveries(
        session, endpoint_id, status=status, limit=limit, cursor=cursor
    )
    return [delivery_view(r) for r in rows], next_cursor
