"""The embedded edge: `mediamill serve` serving signed files and packages under `/cdn`.

The same URL forms, token checks and answers as the nginx edge (`config/edge.py`),
so the URLs the embedded default signs open with nothing else running: 403 for a
missing or wrong token, 410 for an expired one, 404 for dot paths and what is not
stored; CORS on every answer (a browser player can read a refusal), single byte
ranges, HEAD, the content types and cache lifetimes of the nginx configuration.
nginx (or a CDN) stays the production path: it serves from the kernel's page cache
without a Python process in between.

A plain ASGI app mounted by `api/app.py`: the API's routes, dependencies and JSON
error bodies are not for players.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from mediamill.config.edge import EDGE_CONTENT_TYPES, MANIFEST_MAX_AGE_S, MEDIA_MAX_AGE_S
from mediamill.schemas import errors as e
from mediamill.storage.blobs.base import skip_bytes
from mediamill.workers.edge_files import EdgeObject, open_signed
from mediamill.workers.runtime import Runtime

CHUNK_BYTES = 256 * 1024
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range",
    "Access-Control-Max-Age": "86400",
}
_MANIFESTS = {"m3u8", "mpd"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# What each refusal answers, most specific first (as api/errors.py, for players).
_STATUS: list[tuple[type[e.MediaMillError], int]] = [
    (e.UrlExpiredError, 410),
    (e.PermissionDeniedError, 403),
    (e.SymlinkRefusedError, 403),  # nginx's `disable_symlinks` answers 403 too
    (e.BlobNotFoundError, 404),
    (e.InvalidRequestError, 404),
    (e.TransientError, 503),
]


def _headers(key: str) -> dict[str, str]:
    ext = key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else ""
    headers = {
        **CORS_HEADERS,
        "Content-Type": EDGE_CONTENT_TYPES.get(ext, "application/octet-stream"),
        "Accept-Ranges": "bytes",
    }
    if ext in _MANIFESTS:
        headers["Cache-Control"] = f"public, max-age={MANIFEST_MAX_AGE_S}"
    elif ext in EDGE_CONTENT_TYPES:
        headers["Cache-Control"] = f"public, max-age={MEDIA_MAX_AGE_S}"
    return headers


def byte_range(header: str | None, size_bytes: int) -> tuple[int, int] | bool | None:
    """The inclusive (first, last) byte of a single `Range: bytes=` header; None to
    send the whole (no header, or several ranges, which nginx may also answer whole);
    False when it cannot be satisfied (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size_bytes == 0:
            return False
        return max(0, size_bytes - count), size_bytes - 1
    start = int(first)
    end = min(int(last), size_bytes - 1) if last else size_bytes - 1
    if start >= size_bytes or (last and int(last) < start):
        return False
    return start, end


def _chunks(
    opened: contextlib.ExitStack, obj: EdgeObject, start: int, count: int
) -> Iterator[bytes]:
    """`count` bytes of the object from `start`, in bounded chunks; closes it after."""
    with opened:
        stream = obj.stream
        skip_bytes(stream, start, CHUNK_BYTES)
        while count > 0:
            chunk = stream.read(min(CHUNK_BYTES, count))
            if not chunk:
                return
            count -= len(chunk)
            yield chunk


def _refusal(exc: e.MediaMillError) -> Response:
    status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 500)
    reason = {403: "forbidden", 404: "not found", 410: "gone", 503: "try again"}
    return Response(
        f"{status} {reason.get(status, 'error')}\n",
        status_code=status,
        media_type="text/plain",
        headers={**CORS_HEADERS, **({"Retry-After": "5"} if status == 503 else {})},
    )


class EmbeddedEdge:
    """ASGI app over the runtime `get_runtime` returns (the app's, once it started)."""

    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self.get_runtime = get_runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self._respond(scope)
        await response(scope, receive, send)

    async def _respond(self, scope: Scope) -> Response:
        method = scope["method"]
        if method == "OPTIONS":
            return Response(status_code=204, headers=CORS_HEADERS)
        if method not in {"GET", "HEAD"}:
            return Response(
                "405 method not allowed\n", 405, headers=CORS_HEADERS, media_type="text/plain"
            )
        # Under a Mount, `path` keeps the mount's prefix and `root_path` names it.
        path = scope["path"].removeprefix(scope.get("root_path", "")).removeprefix("/")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        md5 = query.get("md5", [None])[-1]
        expires = query.get("expires", [None])[-1]
        request_headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        range_header = request_headers.get("range", b"").decode("latin-1")
        opened = contextlib.ExitStack()
        try:
            obj = await run_in_threadpool(
                opened.enter_context, open_signed(self.get_runtime(), path, md5, expires)
            )
        except e.MediaMillError as exc:
            opened.close()
            return _refusal(exc)
        headers = _headers(obj.key)
        wanted = byte_range(range_header, obj.size_bytes)
        if wanted is False:
            opened.close()
            headers["Content-Range"] = f"bytes */{obj.size_bytes}"
            return Response(status_code=416, headers=headers)
        start, end = wanted if isinstance(wanted, tuple) else (0, obj.size_bytes - 1)
        count = end - start + 1
        headers["Content-Length"] = str(count)
        status = 200
        if isinstance(wanted, tuple):
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{obj.size_bytes}"
        if method == "HEAD" or count == 0:
            opened.close()
            return Response(status_code=status, headers=headers)
        return StreamingResponse(_chunks(opened, obj, start, count), status, headers=headers)
