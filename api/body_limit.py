"""Request body size limits, as one pure ASGI middleware in front of every route.

FastAPI reads a whole JSON body before a route's dependencies (the API key check
among them) run, and `POST /v0/assets` streams a part of any size into the store:
without a limit, anyone who can reach the port can make a process buffer or spool
as much as they send. So every body gets a small limit (`max_json_body_bytes`)
except the two streaming upload routes, which get `upload_max_bytes`.

A too-large `Content-Length` is refused before a byte of the body is read; a body
without one (chunked) is counted as it streams and refused as soon as it passes the
limit: reading on raises a 413 HTTPException, which FastAPI and the routes let
through to the error handlers, so nothing half-received is parsed or stored.
Either way the answer is a 413 `PayloadTooLargeError` in the DESIGN.md error shape.
"""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Multipart framing around the file of `POST /v0/assets` (boundaries, part headers).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_UPLOAD_CONTENT = re.compile(r"^/v0/uploads/[^/]+/content$")


class PayloadTooLarge(HTTPException):
    """The body passed its route's limit while it was being read."""

    def __init__(self, limit_bytes: int, setting: str) -> None:
        super().__init__(413, _message(limit_bytes, setting))


def _message(limit_bytes: int, setting: str) -> str:
    return f"the request body is larger than {limit_bytes} bytes, the most it may be ({setting})"


class BodyLimitMiddleware:
    """Refuses request bodies over their route's limit with a 413."""

    def __init__(self, app: ASGIApp, *, json_max_bytes: int, upload_max_bytes: int) -> None:
        self.app = app
        self.json_max_bytes = json_max_bytes
        self.upload_max_bytes = upload_max_bytes

    def limit_for(self, method: str, path: str) -> tuple[int, str]:
        """The most bytes a body may have on this route, and the setting that says so."""
        if method == "POST" and path == "/v0/assets":
            return self.upload_max_bytes + MULTIPART_OVERHEAD_BYTES, "MEDIAMILL_UPLOAD_MAX_BYTES"
        if method == "PUT" and _UPLOAD_CONTENT.match(path):
            return self.upload_max_bytes, "MEDIAMILL_UPLOAD_MAX_BYTES"
        return self.json_max_bytes, "MEDIAMILL_MAX_JSON_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope.get("method", ""), scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, _message(limit, setting))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit, setting)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except PayloadTooLarge as exc:  # read outside a route's error handling
            if started:
                raise
            await _refuse(scope, send, str(exc.detail))


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent or not a plain number (the server
    refuses a malformed one before we see it)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return None
            # Far past any limit without parsing a huge number.
            return int(text) if len(text) <= 18 else 10**18
    return None


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    """A 413 in the DESIGN.md error shape; the connection closes (the body is unread)."""
    body = json.dumps(
        {
            "name": "PayloadTooLargeError",
            "message": message,
            "statusCode": 413,
            "requestId": scope.get("state", {}).get("request_id", ""),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
