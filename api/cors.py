"""CORS for the playback routes only: pages of `MEDIAMILL_PLAYBACK_ALLOWED_ORIGINS` may
call them with credentials (the tracking cookie), as the tracking guide asks.

With credentials the answer must name the origin (never `*`) and say `Vary: Origin`.
A preflight from an origin not listed is refused with a 403 in the DESIGN.md error
shape, so the page's console says why; other routes get no CORS headers at all (their
keys are not for browsers).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PLAYBACK_PATHS = re.compile(
    r"^/v0/(?:playouts/[^/]+/tracking/session|assets/[^/]+/playback-sessions"
    r"|playback-sessions(?:/[^/]+(?:/heartbeat|/events|/beacon)?)?)$"
)
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = (
    "content-type, x-api-key, x-client-id, x-authentication-token, x-device-id, "
    "x-mediamill-tracking, x-request-id, x-api-version"
)
EXPOSE_HEADERS = "x-mediamill-tracking, x-request-id, retry-after"
PREFLIGHT_MAX_AGE_S = 600


class PlaybackCorsMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: frozenset[str]) -> None:
        self.app = app
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not PLAYBACK_PATHS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin in self.allowed_origins
        if preflight:
            request_id = scope.get("state", {}).get("request_id", "")
            await _preflight(send, origin if allowed else None, request_id)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, origin: str | None, request_id: str) -> None:
    if origin is None:
        body = json.dumps(
            {
                "name": "PermissionDeniedError",
                "message": "this origin is not in MEDIAMILL_PLAYBACK_ALLOWED_ORIGINS",
                "statusCode": 403,
                "requestId": request_id,
            }
        ).encode()
        start = {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin"),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
                (b"vary", b"Origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
