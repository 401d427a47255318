"""BodyLimitMiddleware (api/body_limit.py) at the ASGI level: a declared length over the
limit is refused before the body is read; a streamed body is refused as soon as the
bytes received pass the limit, without reading the rest."""

from __future__ import annotations

import asyncio
import json

from starlette.types import Message, Receive, Scope, Send

from mediamill.api.body_limit import MULTIPART_OVERHEAD_BYTES, BodyLimitMiddleware

JSON_LIMIT = 100
UPLOAD_LIMIT = 1000
PIECE = b"x" * 30


class _Reader:
    """An app that reads the whole body, then answers 200 with how much it got."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps({"size": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _run(
    method: str, path: str, pieces: int, content_length: int | str | None = None
) -> tuple[list[Message], int, _Reader]:
    """Send `pieces` pieces of PIECE through the middleware: (messages sent back, pieces
    the client had to hand over, the app)."""
    app = _Reader()
    middleware = BodyLimitMiddleware(app, json_max_bytes=JSON_LIMIT, upload_max_bytes=UPLOAD_LIMIT)
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    scope["state"] = {"request_id": "req-1"}
    handed: list[int] = []

    async def receive() -> Message:
        handed.append(1)
        return {"type": "http.request", "body": PIECE, "more_body": len(handed) < pieces}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent, len(handed), app


def _status_and_body(sent: list[Message]) -> tuple[int, dict]:
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    sent, handed, app = _run("POST", "/v0/jobs", 10, content_length=JSON_LIMIT + 1)
    status, body = _status_and_body(sent)
    assert status == 413 and handed == 0 and not app.called
    assert body["name"] == "PayloadTooLargeError" and body["statusCode"] == 413
    assert body["requestId"] == "req-1" and "MEDIAMILL_MAX_JSON_BODY_BYTES" in body["message"]
    sent, handed, _app = _run("POST", "/v0/jobs", 1, content_length="9" * 40)
    assert _status_and_body(sent)[0] == 413 and handed == 0


def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    sent, handed, app = _run("POST", "/v0/events/storage", 100)
    status, body = _status_and_body(sent)
    assert status == 413 and app.called and body["name"] == "PayloadTooLargeError"
    assert handed == JSON_LIMIT // len(PIECE) + 1  # the piece that crossed it, no more
    sent, handed, _app = _run("POST", "/v0/events/storage", 3)  # 90 bytes: within
    assert _status_and_body(sent) == (200, {"size": 90}) and handed == 3


def test_the_upload_routes_get_the_upload_limit() -> None:
    sent, _, _app = _run("PUT", "/v0/uploads/abc/content", UPLOAD_LIMIT // len(PIECE))
    assert _status_and_body(sent)[0] == 200
    sent, handed, _app = _run("PUT", "/v0/uploads/abc/content", 1000)
    status, body = _status_and_body(sent)
    assert status == 413 and "MEDIAMILL_UPLOAD_MAX_BYTES" in body["message"]
    assert handed == UPLOAD_LIMIT // len(PIECE) + 1
    multipart_limit = UPLOAD_LIMIT + MULTIPART_OVERHEAD_BYTES
    sent, _, _app = _run("POST", "/v0/assets", 1, content_length=multipart_limit)
    assert _status_and_body(sent)[0] == 200
    sent, _, _app = _run("POST", "/v0/assets", 1, content_length=multipart_limit + 1)
    assert _status_and_body(sent)[0] == 413
    # Other methods and paths near the upload routes keep the small limit.
    for method, path in (("GET", "/v0/assets"), ("POST", "/v0/uploads/abc/content/x")):
        sent, _, _app = _run(method, path, 1, content_length=JSON_LIMIT + 1)
        assert _status_and_body(sent)[0] == 413, (method, path)
