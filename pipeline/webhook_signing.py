"""Signing webhook deliveries: Standard Webhooks v1, plus a GitHub-style header.

Standard Webhooks (https://www.standardwebhooks.com): the secret is `whsec_` +
base64 of 32 random bytes; `webhook-signature` is `v1,` + base64 of
HMAC-SHA256(key = the base64-decoded secret, msg = "{id}.{timestamp}.{body}").
During a secret rotation several signatures are sent, space-separated, and a
receiver accepts any one. `X-MediaMill-Signature-256: sha256=<hex>` is HMAC-SHA256
of the body alone keyed with the secret string as configured (GitHub's form), for
receivers built for that convention.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """What later reads show of a secret: its last 4 characters."""
    return secret[-4:]


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def standard_signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a delivery."""
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    active_secrets: list[str], msg_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """Every signing header of one delivery; `active_secrets` newest first (two while a
    rotation is in its grace period). The GitHub-style header uses the newest secret."""
    if not active_secrets:
        raise ValueError("a delivery needs at least one secret")
    github = hmac.new(active_secrets[0].encode(), body, hashlib.sha256).hexdigest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id, timestamp_s, body) for s in active_secrets
        ),
        "X-MediaMill-Signature-256": f"sha256={github}",
    }
