"""One webhook POST, guarded against SSRF and bounded in time and size.

The endpoint's host is resolved and every address judged by url_source's
`address_allowed` (loopback, private, link-local, CGNAT, multicast, reserved,
IPv4-mapped, 6to4 and Teredo addresses are refused) unless the host is in
`MEDIAMILL_WEBHOOK_ALLOW_HOSTS`; the connection then goes to the very address
checked (no second lookup to rebind), with the Host header and TLS server name
still the host's. Only https, except allowed hosts. Redirects are not followed:
a 3xx is an answer like any other non-2xx. The answer is read up to
`max_response_bytes`.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from mediamill.schemas.errors import InvalidRequestError, RefusedUrlError
from mediamill.workers.url_source import (
    address_allowed,
    parse_source_url,
    pinned_connection,
)

USER_AGENT = "MediaMill-Webhooks/1"
EXCERPT_BYTES = 1024
READ_PIECE_BYTES = 16 * 1024


@dataclass(frozen=True)
class HttpResult:
    """An attempt's result: the status (None when there was no answer), the first
    bytes of the answer, the wall time, an error text and a Retry-After in seconds."""

    status: int | None
    excerpt: bytes
    duration_ms: int
    error: str | None = None
    retry_after_s: float | None = None



def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a seam tests replace)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_addresses(url: str, allow_hosts: frozenset[str]) -> tuple[list[str], bool]:
    """The addresses to connect to for `url`, all judged; and whether the host is
    allow-listed. RefusedUrlError for a non-https URL (outside the allow list), a host
    that does not resolve, or any non-public address."""
    try:
        source = parse_source_url(url)
    except InvalidRequestError as exc:
        raise RefusedUrlError(exc.message) from exc
    allowed = source.host.lower() in allow_hosts
    if source.scheme != "https" and not allowed:
        raise RefusedUrlError(f"{source.host}: webhook URLs must be https")
    try:
        addresses = resolve(source.host, source.port)
    except OSError as exc:
        raise RefusedUrlError(f"{source.host} does not resolve: {exc}") from exc
    if not addresses:
        raise RefusedUrlError(f"{source.host} does not resolve")
    if not allowed:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise RefusedUrlError(
                f"{source.host} resolves to a non-public address ({refused[0]}); "
                "loopback, private, link-local and reserved addresses are refused"
            )
    return addresses, allowed


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    """Read the answer up to `max_bytes` or until `deadline` (the rest is left unread,
    so a receiver dripping bytes cannot hold the dispatcher); keep the start."""
    kept = bytearray()
    read = 0
    while read < max_bytes and time.monotonic() < deadline:
        piece = response.read1(min(READ_PIECE_BYTES, max_bytes - read))
        if not piece:
            break
        read += len(piece)
        if len(kept) < EXCERPT_BYTES:
            kept += piece[: EXCERPT_BYTES - len(kept)]
    return bytes(kept)


def post_webhook(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_hosts: frozenset[str],
    timeout_s: float,
    max_response_bytes: int,
) -> HttpResult:
    """POST `body` to `url` once. Never raises for network trouble or a refused
    address: those come back as an HttpResult with `error` set and no status."""
    started = time.monotonic()

    def took_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        addresses, _allowed = checked_addresses(url, allow_hosts)
    except RefusedUrlError as exc:
        return HttpResult(None, b"", took_ms(), f"refused: {exc}")
    source = parse_source_url(url)
    last_error = "no address to connect to"
    for address in addresses:
        conn = pinned_connection(source, address, timeout_s)
        try:
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as exc:
                return HttpResult(None, b"", took_ms(), f"TLS certificate refused: {exc}")
            except OSError as exc:
                last_error = f"cannot connect to {address}: {exc}"
                continue
            try:
                conn.putrequest("POST", source.target, skip_accept_encoding=True)
                for name, value in {
                    **headers,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                    "User-Agent": USER_AGENT,
                    "Accept-Encoding": "identity",
                }.items():
                    conn.putheader(name, value)
                conn.endheaders(body)
                response = conn.getresponse()
                excerpt = _read_capped(response, max_response_bytes, started + timeout_s)
            except (OSError, http.client.HTTPException) as exc:
                return HttpResult(None, b"", took_ms(), f"request failed: {exc!r}")
            status = response.status
            error = None
            if 300 <= status < 400:
                error = f"redirect to {response.getheader('Location')!r} not followed"
            elif not 200 <= status < 300:
                error = f"answered {status} {response.reason}"
            return HttpResult(
                status,
                excerpt,
                took_ms(),
                error,
                parse_retry_after(response.getheader("Retry-After")),
            )
        finally:
            conn.close()
    return HttpResult(None, b"", took_ms(), last_error)
