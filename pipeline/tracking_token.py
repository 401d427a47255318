"""Tracking session tokens: base64 of a JSON object, signed so a client can neither
forge nor edit one.

The token is what Media Jay's is (base64url of `{"sessionId", "startTime", "source",
...}`, readable by anyone holding it) plus two fields: `expiresAt` (epoch seconds)
and `sig`, the HMAC-SHA256 of the object's other fields in canonical JSON (sorted
keys, no spaces), keyed by a key derived from the signing secret for this purpose
only. A token is only as private as its contents: it carries a user id only when the
client sent one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from mediamill.schemas.errors import TrackingSessionExpiredError, TrackingSessionInvalidError
from mediamill.schemas.playback import TrackingSession

# Longer than any token we make (a 128-character user id and playout id included).
MAX_TOKEN_CHARS = 2048
_KEY_LABEL = b"mediamill-tracking-session"


@dataclass(frozen=True)
class TrackingClaims:
    """A token's checked contents."""

    session: TrackingSession
    expires_at_s: int


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _canonical(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signature(fields: dict[str, object], secret: str) -> str:
    digest = hmac.new(_key(secret), _canonical(fields), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(session: TrackingSession, expires_at_s: int, secret: str) -> str:
    """The signed token of `session`, valid until `expires_at_s`."""
    fields: dict[str, object] = {**session.to_json_dict(), "expiresAt": int(expires_at_s)}
    fields["sig"] = _signature(fields, secret)
    return base64.urlsafe_b64encode(_canonical(fields)).rstrip(b"=").decode()


def read_token(token: str, secret: str, now_s: float | None = None) -> TrackingClaims:
    """The claims of a token this service signed and that has not expired, else
    TrackingSessionInvalidError (not ours, edited, not a token at all) or
    TrackingSessionExpiredError."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TrackingSessionInvalidError("the tracking session token is not one of ours")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # 2 KB of `[` nests too deep
        raise TrackingSessionInvalidError(
            "the tracking session token is not base64 of a JSON object"
        ) from None
    if not isinstance(fields, dict) or not isinstance(fields.get("sig"), str):
        raise TrackingSessionInvalidError("the tracking session token carries no signature")
    given = fields.pop("sig")
    if not hmac.compare_digest(given.encode(), _signature(fields, secret).encode()):
        raise TrackingSessionInvalidError(
            "the tracking session token's signature does not check out (forged or edited)"
        )
    expires_at_s = fields.pop("expiresAt", None)
    if not isinstance(expires_at_s, int):
        raise TrackingSessionInvalidError("the tracking session token has no expiry")
    now = time.time() if now_s is None else now_s
    if expires_at_s < now:
        when = datetime.fromtimestamp(expires_at_s, UTC).isoformat(timespec="seconds")
        raise TrackingSessionExpiredError(
            f"the tracking session expired at {when}; create a new one"
        )
    try:
        session = TrackingSession.model_validate(fields)
    except ValueError:
        raise TrackingSessionInvalidError("the tracking session token is malformed") from None
    return TrackingClaims(session, expires_at_s)
