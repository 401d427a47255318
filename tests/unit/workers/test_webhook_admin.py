"""Managing webhook endpoints (workers/webhook_admin.py) on SQLite, with no network.

The contract: a URL is accepted only if https, without credentials or fragment, at most
2048 characters, and every address of its host public (allow-listed hosts exempt);
refusals are InvalidRequestError naming the webhook URL and why. Event lists are
known types (or `*`), deduplicated. Actions write only what passed the checks, an
update looks the endpoint up before judging the body, and the secret is shown only by
create and rotate. Literal addresses need no DNS; named hosts use a fake resolver.
"""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta
from typing import Any

import pytest

from mediamill.config.settings import Settings
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import ConflictError, InvalidRequestError, ModelNotFoundError
from mediamill.schemas.webhooks import MAX_EVENTS, MAX_URL_LENGTH, WEBHOOK_EVENT_TYPES
from mediamill.storage.db import Database
from mediamill.storage.models import WebhookDeliveryRow, WebhookEndpointRow
from mediamill.workers import webhook_admin as admin

PUBLIC = "https://93.184.215.14/hooks/in"  # a literal public address: no DNS needed
SETTINGS = Settings(_env_file=None, webhook_allow_hosts="Hooks.Internal")


def fake_getaddrinfo(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """getaddrinfo answering `answers` for names; literal addresses as the real one."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def refusal(url: str) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        admin.check_webhook_url(url, SETTINGS)
    return caught.value.message


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "carrier-grade NAT (CGNAT)"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("172.16.5.4", "private"),
        ("::ffff:10.0.0.1", "IPv4-mapped IPv6 (private)"),
        ("2002:a9fe:a9fe::1", "6to4/Teredo tunnel to a non-public IPv4 address"),
        ("93.184.215.14", "public"),
    ],
)
def test_address_class_names_the_kind_of_address(address: str, kind: str) -> None:
    """The word used in refusals: what kind of address it is (a scope id is ignored)."""
    assert admin.address_class(address) == kind


def test_check_events_keeps_known_types_once_in_order() -> None:
    """Known types and `*` pass, duplicates dropped; unknown, empty or too many refused."""
    assert admin.check_events(["job.failed", "*", "job.failed", "ping"]) == [
        "job.failed",
        "*",
        "ping",
    ]
    with pytest.raises(InvalidRequestError, match="at least one event type"):
        admin.check_events([])
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_EVENTS} event types"):
        admin.check_events(["ping"] * (MAX_EVENTS + 1))
    with pytest.raises(InvalidRequestError) as caught:
        admin.check_events(["ping", "asset.deleted" + "x" * 100, "nope"])
    message = caught.value.message
    assert message.startswith(f"unknown event type {('asset.deleted' + 'x' * 100)[:64]!r};")
    assert all(t in message for t in WEBHOOK_EVENT_TYPES) and "nope" not in message


def test_check_webhook_url_refusals_name_the_webhook_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each refusal says what is wrong, in webhook terms (not the URL ingest's)."""
    longest = PUBLIC + "/" + "a" * (MAX_URL_LENGTH - len(PUBLIC) - 1)
    assert admin.check_webhook_url(longest, SETTINGS) == longest
    assert refusal(longest + "a") == f"the webhook URL must be 1 to {MAX_URL_LENGTH} characters"
    assert (
        refusal("https://u:p@93.184.215.14/") == "credentials in the webhook URL are not accepted"
    )
    assert refusal("https:///in") == "the webhook URL has no host"
    assert refusal("https://93.184.215.14:99999/").startswith("the webhook URL has an invalid port")
    assert refusal("https://93.184.215.14:0/") == "the webhook URL has an invalid port: 0"
    assert refusal("https://[::1/").startswith("the webhook URL is not a valid URL")
    assert refusal("ftp://93.184.215.14/") == "webhook URLs must be https://, not 'ftp'"
    assert refusal(PUBLIC + "#top") == "the webhook URL must not have a fragment (#...)"
    assert refusal("https://[::1]/in") == (
        "::1 is a loopback address; webhooks are only delivered to public addresses"
    )
    fake_getaddrinfo(monkeypatch, {"cdn.example.com": ["93.184.215.14", "fd00::7"]})
    assert refusal("https://cdn.example.com/in") == (
        "the webhook host cdn.example.com resolves to fd00::7, a private address; "
        "webhooks are only delivered to public addresses"
    )


def test_allow_listed_hosts_skip_https_and_address_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host on MEDIAMILL_WEBHOOK_ALLOW_HOSTS (any case) may be http and private."""
    fake_getaddrinfo(monkeypatch, {"hooks.internal": ["10.0.0.9"], "other.internal": ["10.0.0.9"]})
    assert admin.check_webhook_url("http://hooks.internal:8080/in", SETTINGS) == (
        "http://hooks.internal:8080/in"
    )
    assert admin.check_webhook_url("https://HOOKS.internal/in", SETTINGS) == (
        "https://HOOKS.internal/in"
    )
    assert refusal("http://other.internal/in") == (
        "webhook URLs must be https:// (other.internal is not in MEDIAMILL_WEBHOOK_ALLOW_HOSTS)"
    )
    assert "resolves to 10.0.0.9, a private address" in refusal("https://other.internal/in")


def test_create_stores_only_a_checked_endpoint_and_shows_the_secret(db: Database) -> None:
    """The answer holds the new secret; the row holds the checked values; a refusal, none."""
    with db.session() as s:
        created = admin.create_endpoint(
            s, SETTINGS, url=PUBLIC, events=["ping", "ping", "job.failed"], description="CMS"
        )
    assert created.secret.startswith("whsec_") and created.secret_hint == created.secret[-4:]
    assert created.events == ["ping", "job.failed"] and created.status == "active"
    assert created.previous_secret_expires_at is None
    with db.session() as s:
        row = s.get(WebhookEndpointRow, created.id)
        assert row is not None
        assert (row.url, row.events, row.description, row.secret) == (
            PUBLIC,
            {"types": ["ping", "job.failed"]},
            "CMS",
            created.secret,
        )
        assert "secret" not in admin.get_endpoint(s, created.id).model_dump()
    for kwargs in (
        {"url": "https://127.0.0.1/in", "events": ["ping"]},
        {"url": PUBLIC, "events": ["nope"]},
        {"url": PUBLIC, "events": ["ping"], "description": "x" * 1001},
    ):
        with db.session() as s, pytest.raises(InvalidRequestError):
            admin.create_endpoint(s, SETTINGS, **kwargs)  # type: ignore[arg-type]
    with db.session() as s:
        assert s.query(WebhookEndpointRow).count() == 1


def test_update_finds_the_endpoint_first_and_changes_only_what_passes(db: Database) -> None:
    """Unknown id: 404 even with a bad body; a refused URL leaves the row as it was;
    enabling again clears the reason and the failure streak."""
    with db.session() as s:
        hook = admin.create_endpoint(s, SETTINGS, url=PUBLIC, events=["*"])
    with db.session() as s, pytest.raises(InvalidRequestError, match="url cannot be null"):
        admin.update_endpoint(s, SETTINGS, hook.id, {"url": None})
    with db.session() as s, pytest.raises(ModelNotFoundError):
        admin.update_endpoint(s, SETTINGS, "no-such-id", {"url": "ftp://x"})
    with db.session() as s, pytest.raises(InvalidRequestError, match="loopback"):
        admin.update_endpoint(
            s, SETTINGS, hook.id, {"url": "https://127.0.0.1/in", "events": ["ping"]}
        )
    with db.session() as s:
        disabled = admin.update_endpoint(s, SETTINGS, hook.id, {"status": "disabled"})
        assert (disabled.url, disabled.events) == (PUBLIC, ["*"])
        assert disabled.disabled_reason == "disabled by an admin"
        s.get(WebhookEndpointRow, hook.id).failing_since = utcnow()  # type: ignore[union-attr]
    with db.session() as s:
        enabled = admin.update_endpoint(
            s, SETTINGS, hook.id, {"status": "active", "events": ["ping", "ping"]}
        )
        assert (enabled.status, enabled.disabled_reason, enabled.events) == (
            "active",
            None,
            ["ping"],
        )
        assert s.get(WebhookEndpointRow, hook.id).failing_since is None  # type: ignore[union-attr]


def test_ping_and_redeliver_need_an_active_endpoint(db: Database) -> None:
    """A ping is a due delivery of that endpoint; a disabled endpoint is a ConflictError."""
    with db.session() as s:
        hook = admin.create_endpoint(s, SETTINGS, url=PUBLIC, events=["job.failed"])
        ping = admin.send_test_ping(s, hook.id)
    assert (ping.event_type, ping.status, ping.attempt_count) == ("ping", "pending", 0)
    assert ping.next_retry_at is not None
    with db.session() as s:
        admin.update_endpoint(s, SETTINGS, hook.id, {"status": "disabled"})
    expected = (
        f"webhook endpoint {hook.id} is disabled (disabled by an admin): "
        "enable it first (PATCH status=active)"
    )
    for action in (
        lambda s: admin.send_test_ping(s, hook.id),
        lambda s: admin.redeliver(s, hook.id, ping.id),
    ):
        with db.session() as s, pytest.raises(ConflictError) as caught:
            action(s)
        assert caught.value.message == expected
    with db.session() as s:
        [only], cursor = admin.list_deliveries(s, hook.id)
        assert (only.id, cursor) == (ping.id, None)


def test_delivery_view_shows_a_retry_time_only_while_due() -> None:
    """next_retry_at only for pending/retrying; the excerpt capped at 1 KB, empty as None."""
    now = utcnow()

    def row(status: str, excerpt: str | None) -> WebhookDeliveryRow:
        return WebhookDeliveryRow(
            id=str(uuid.uuid4()),
            endpoint_id="e",
            event_id="evt",
            event_type="ping",
            status=status,
            attempt_count=None,
            next_attempt_at=now + timedelta(minutes=5),
            response_excerpt=excerpt,
            created_at=now,
        )

    retrying = admin.delivery_view(row("retrying", "x" * 3000))
    assert retrying.next_retry_at == now + timedelta(minutes=5)
    assert retrying.response_excerpt == "x" * 1024 and retrying.attempt_count == 0
    failed = admin.delivery_view(row("failed", ""))
    assert failed.next_retry_at is None and failed.response_excerpt is None
