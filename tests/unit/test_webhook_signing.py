"""Delivery signatures verify with the `standardwebhooks` reference library and with a
GitHub-style HMAC check computed here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mediamill.pipeline.webhook_signing import (
    new_secret,
    secret_hint,
    signature_headers,
    standard_signature,
)


def test_secrets_are_whsec_and_32_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32
    assert secret_hint(a) == a[-4:]


def test_the_reference_library_verifies_our_signature(monkeypatch) -> None:
    secret = new_secret()
    body = json.dumps({"id": "evt_1", "type": "ping", "data": {}}).encode()
    import time

    now = int(time.time())
    headers = signature_headers([secret], "evt_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "ping", "data": {}}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    tampered = body.replace(b"ping", b"pong")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_during_a_rotation_both_secrets_verify() -> None:
    import time

    old, new = new_secret(), new_secret()
    body, now = b'{"id":"evt_2"}', int(time.time())
    headers = signature_headers([new, old], "evt_2", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"id": "evt_2"}
    assert headers["webhook-signature"].split(" ")[0] == standard_signature(new, "evt_2", now, body)


def test_github_style_header_is_the_hex_hmac_of_the_body() -> None:
    secret, body = new_secret(), b'{"a":1}'
    headers = signature_headers([secret], "evt_3", 1_700_000_000, body)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-MediaMill-Signature-256"] == f"sha256={expected}"
    assert headers["webhook-id"] == "evt_3" and headers["webhook-timestamp"] == "1700000000"
