"""API keys: created once (the token is shown then and never stored), checked by hash.

A key is a public client id plus a random secret token; the row keeps the token's
SHA-256. Tokens carry 256 bits of randomness, so an unsalted hash is as strong as
the token itself and lets a lookup be one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.storage.models import ApiKeyRow

# `playback` keys are publishable (shipped in web pages and apps): they may only use the
# playback routes (tracking and playback sessions, heartbeats, events).
SCOPES = ("admin", "read", "playback")


@dataclass(frozen=True)
class NewApiKey:
    client_id: str
    token: str
    scope: str

    @property
    def api_key(self) -> str:
        """The single-header form (`X-API-Key: <clientId>.<token>`)."""
        return f"{self.client_id}.{self.token}"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(session: Session, scope: str, name: str | None = None) -> NewApiKey:
    """A new key of `scope` (`admin`, `read` or `playback`); the token is returned only
    here."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key = NewApiKey(secrets.token_hex(16), secrets.token_urlsafe(32), scope)
    session.add(
        ApiKeyRow(
            client_id=key.client_id,
            token_sha256=token_sha256(key.token),
            scope=scope,
            name=name,
            created_at=utcnow(),
        )
    )
    return key


def verify_api_key(session: Session, client_id: str, token: str) -> str | None:
    """The key's scope when `client_id` names a live key whose token is `token`, else None.
    The hashes are compared in constant time."""
    row = session.get(ApiKeyRow, client_id) if client_id else None
    expected = row.token_sha256 if row is not None and row.revoked_at is None else "0" * 64
    matches = hmac.compare_digest(expected, token_sha256(token))
    return row.scope if matches and row is not None and row.revoked_at is None else None


def revoked_at(session: Session, client_id: str, token: str) -> datetime | None:
    """When the key `client_id` was revoked, if `token` is its token (compared in
    constant time): a caller holding a revoked key is told so, and nobody learns
    anything about a key whose token they do not hold."""
    row = session.get(ApiKeyRow, client_id) if client_id else None
    if row is None or row.revoked_at is None:
        return None
    return row.revoked_at if hmac.compare_digest(row.token_sha256, token_sha256(token)) else None


def list_api_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKeyRow]:
    """The keys, newest first (live ones only unless `include_revoked`); their tokens
    are never stored, so never listed."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.client_id)
    if not include_revoked:
        stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
    return list(session.scalars(stmt))


def revoke_api_key(session: Session, client_id: str) -> bool:
    row = session.get(ApiKeyRow, client_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True
