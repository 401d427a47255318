"""Per-request conventions as one pure ASGI middleware (cheaper than Starlette's
BaseHTTPMiddleware on the hot path): a request id (the caller's `X-Request-Id`, or a
new one) echoed on the response and carried in error bodies; the `X-API-Version`
chosen (a date; an unknown one is a 400) echoed on every response; request latency
observed for /metrics."""

from __future__ import annotations

import json
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediamill.api.metrics import ApiMetrics
from mediamill.api.versions import API_VERSIONS, LATEST_API_VERSION

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class ConventionsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.match(given_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        version = headers.get("x-api-version") or LATEST_API_VERSION
        status_holder = {"status": 500}
        echo = [
            (b"x-request-id", request_id.encode()),
            (
                b"x-api-version",
                (version if version in API_VERSIONS else LATEST_API_VERSION).encode(),
            ),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *echo]
            await send(message)

        try:
            if version not in API_VERSIONS:
                await _reject(_version_message(version), request_id, send_with_headers)
                return
            raw = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
            if b"%00" in raw.lower() or "\x00" in scope.get("path", ""):
                # No key, id or filter contains NUL; PostgreSQL cannot even compare one.
                await _reject("NUL (%00) is not allowed in URLs", request_id, send_with_headers)
                return
            scope["state"]["api_version"] = version
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope.get("method", ""),
                path,
                status_holder["status"],
                time.perf_counter() - started,
            )


def _version_message(version: str) -> str:
    return f"unknown X-API-Version {version!r}; supported: {', '.join(API_VERSIONS)}"


async def _reject(message: str, request_id: str, send) -> None:
    """A 400 in the DESIGN.md error shape, answered before any route runs."""
    body = json.dumps(
        {
            "name": "InvalidRequestError",
            "message": message,
            "statusCode": 400,
            "requestId": request_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
