"""API key authentication and scopes.

A key is accepted as `x-client-id` + `x-authentication-token` (the Content
Automation API's headers) or as one `X-API-Key: <clientId>.<token>` header. Keys
are stored hashed and compared in constant time (storage/api_keys.py). A verified
key is remembered for a few seconds, so the hot path (job status at hundreds of
requests a second) does not read the key table every time; revoking a key takes
effect within that time.

The dependencies are `async`: a cache hit costs microseconds, whereas each sync
dependency would cost a hop through the thread pool (about 0.5 ms of CPU apiece on
a small machine, measured by scripts/bench_api.py). Only a cache miss reads the
database, in the thread pool.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from mediamill.api.state import app_runtime
from mediamill.schemas.errors import AuthenticationError, PermissionDeniedError
from mediamill.storage.api_keys import revoked_at, token_sha256, verify_api_key

KEY_CACHE_TTL_S = 5.0


PLAYBACK_ONLY = (
    "a playback key may only create and read tracking and playback sessions and send "
    "heartbeats and events; this needs a read or admin API key"
)


@dataclass(frozen=True)
class Principal:
    client_id: str
    scope: str  # "admin", "read" or "playback"


class _KeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, client_id: str, digest: str) -> str | None:
        with self._lock:
            hit = self._entries.get((client_id, digest))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, client_id: str, digest: str, scope: str) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[(client_id, digest)] = (scope, time.monotonic() + KEY_CACHE_TTL_S)


_cache = _KeyCache()


def _credentials(request: Request) -> tuple[str, str]:
    """(client id, token) from either header form; AuthenticationError saying whether
    the key is missing or malformed."""
    client_id = request.headers.get("x-client-id", "")
    token = request.headers.get("x-authentication-token", "")
    # IBM Video Analytics' clients send `Authorization: <token>`: a key fits there too.
    api_key = request.headers.get("x-api-key", "") or _authorization_key(request)
    if client_id and token:
        return client_id, token
    if client_id or token:
        raise AuthenticationError(
            "malformed API key: x-client-id and x-authentication-token go together"
        )
    if not api_key:
        raise AuthenticationError(
            "an API key is required: x-client-id + x-authentication-token, or X-API-Key"
        )
    client_id, _, token = api_key.partition(".")
    if not (client_id and token):
        raise AuthenticationError("malformed API key: X-API-Key is '<client id>.<token>'")
    return client_id, token


def _authorization_key(request: Request) -> str:
    value = request.headers.get("authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else value


def _verify(request: Request, client_id: str, token: str) -> str:
    """The live key's scope; AuthenticationError naming a revoked key (to its holder)
    or an unknown one."""
    with app_runtime(request).db.session() as s:
        scope = verify_api_key(s, client_id, token)
        if scope is not None:
            return scope
        when = revoked_at(s, client_id, token)
    if when is not None:
        raise AuthenticationError(
            f"this API key was revoked at {when.isoformat(timespec='seconds')}; "
            "ask for a new one (mediamill keys create)"
        )
    raise AuthenticationError("unknown API key: no live key has this client id and token")


async def authenticate(request: Request) -> Principal:
    """The caller's key, or 401."""
    client_id, token = _credentials(request)
    return await _principal(request, client_id, token)


async def authenticate_query_key(request: Request, api_key: str | None) -> Principal:
    """The key a URL carries (`?apiKey=<clientId>.<token>`), or 401: for the beacon that
    `navigator.sendBeacon` sends, which cannot carry headers. Only for publishable keys'
    routes: a key in a URL ends up in access logs."""
    client_id, _, token = (api_key or "").partition(".")
    if not (client_id and token):
        raise AuthenticationError("an apiKey query parameter '<client id>.<token>' is required")
    principal = await _principal(request, client_id, token)
    if principal.scope != "playback":
        raise PermissionDeniedError(
            "only a playback key may ride in a URL (apiKey): URLs end up in logs"
        )
    return principal


async def _principal(request: Request, client_id: str, token: str) -> Principal:
    digest = token_sha256(token)
    scope = _cache.get(client_id, digest)
    if scope is None:
        scope = await run_in_threadpool(_verify, request, client_id, token)
        _cache.put(client_id, digest, scope)
    principal = Principal(client_id, scope)
    request.state.principal = principal
    return principal


async def require_read(principal: Principal = Depends(authenticate)) -> Principal:  # noqa: B008
    """A read or admin key may read; a playback key (published in web pages) may not."""
    if principal.scope == "playback":
        raise PermissionDeniedError(PLAYBACK_ONLY)
    return principal


async def require_admin(principal: Principal = Depends(authenticate)) -> Principal:  # noqa: B008
    """Ingest and management need an `admin` key."""
    if principal.scope == "playback":
        raise PermissionDeniedError(PLAYBACK_ONLY)
    if principal.scope != "admin":
        raise PermissionDeniedError("this needs an admin API key; this key may only read")
    return principal


async def require_player(
    request: Request,
    principal: Principal = Depends(authenticate),  # noqa: B008
) -> Principal:
    """A `playback` or `admin` key may use the playback routes, a `read` key only read
    them; a `playback` key is rate-limited per client address
    (`MEDIAMILL_PLAYBACK_RATE_PER_S`)."""
    limit_player(request, principal)
    return principal


def limit_player(request: Request, principal: Principal) -> None:
    """PermissionDeniedError for a read key that would write; RateLimitedError when a
    `playback` key's requests from this address are over the rate (other keys are not
    limited)."""
    if principal.scope == "read" and request.method not in {"GET", "HEAD"}:
        raise PermissionDeniedError(
            "a read key may only read; players send with a playback key, servers an admin key"
        )
    if principal.scope == "playback":
        address = request.client.host if request.client is not None else ""
        request.app.state.playback_limiter.check((principal.client_id, address))
