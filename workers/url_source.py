"""Ingest from an http(s) URL: the bytes streamed into the store, bounded in size and time.

A URL given to the API must not make the service reach hosts its callers cannot:
only http and https, no credentials in the URL, and every address the host
resolves to must be global (private, loopback, link-local such as a cloud
metadata endpoint, multicast and reserved ranges are refused) unless the host is
one of `MEDIAMILL_URL_INGEST_ALLOW_HOSTS` (matched exactly: a media server on the
closed network), or `MEDIAMILL_ALLOW_PRIVATE_URL_INGEST` lifts the check for every
host. The connection goes to the very address that was checked (no second DNS
lookup an attacker could answer differently), TLS still verifies the certificate
against the host name, and each redirect hop is checked the same way, allow-list
included: an allowed host cannot redirect to an internal one that is not.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from mediamill.schemas.errors import (
    FileTooLargeError,
    InvalidRequestError,
    ModelNotFoundError,
    ProcessingTimeoutError,
    TransientError,
)

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
# One read returns at most this much, so the deadline is checked often even when a
# store asks for large chunks.
READ_PIECE_BYTES = 1 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}
# HTTP answers worth retrying later; any other 4xx is the URL's fault.
_TRANSIENT_STATUSES = {408, 425, 429}


# Characters of a request target left as they are (RFC 3986 reserved, and `%`).
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True)
class SourceUrl:
    """A URL that passed the syntactic checks."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line


def parse_source_url(url: str) -> SourceUrl:
    """Check the URL's form: http(s), a host, no credentials, no fragment games."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"the source URL must be 1 to {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidRequestError("the source URL must not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidRequestError(f"only http(s) URLs can be ingested, not {scheme or url!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("credentials in the source URL are not accepted")
    try:
        given_port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(f"the source URL has an invalid port: {exc}") from exc
    if given_port == 0:
        # `:0` would silently become the scheme's default port: no server listens on 0.
        raise InvalidRequestError("the source URL has an invalid port: 0")
    port = given_port or _DEFAULT_PORTS[scheme]
    host = parts.hostname
    if not host:
        raise InvalidRequestError("the source URL has no host")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    # http.client sends the request line as ASCII: a non-ASCII path (an IRI, which
    # callers may register) goes percent-encoded as UTF-8; what is encoded stays.
    target = quote(target, safe=_TARGET_SAFE)
    return SourceUrl(url=url, scheme=scheme, host=host, port=port, target=target)


def parse_allow_hosts(text: str) -> frozenset[str]:
    """`"localhost, Media.Internal, [::1]"` -> the host names as URLs carry them
    (lower-cased, IPv6 without brackets), matched exactly: no wildcards, no suffixes."""
    hosts = (h.strip().lower() for h in text.split(","))
    return frozenset(h[1:-1] if h.startswith("[") and h.endswith("]") else h for h in hosts if h)


def _global_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def address_allowed(address: str) -> bool:
    """True for a globally routable unicast address. IPv6 that carries IPv4 addresses
    is judged by them: IPv4-mapped as the IPv4 itself; 6to4 (2002::/16) and Teredo
    (2001::/32) tunnel to the IPv4 they embed, so those must be allowed too
    (2002:a9fe:a9fe::1 reaches 169.254.169.254, a cloud metadata endpoint)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _global_unicast(ip.ipv4_mapped)
        embedded = [ip.sixtofour] if ip.sixtofour is not None else []
        embedded += list(ip.teredo or ())  # (server, client)
        if not all(_global_unicast(v4) for v4 in embedded):
            return False
    return _global_unicast(ip)


def resolve_addresses(
    source: SourceUrl, *, allow_private: bool, allow_hosts: frozenset[str] = frozenset()
) -> list[str]:
    """The host's addresses, all of them checked unless the host is in `allow_hosts`
    (exactly) or `allow_private` is set. A literal address is not looked up."""
    try:
        infos = socket.getaddrinfo(source.host, source.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            raise TransientError(f"cannot resolve {source.host} now: {exc}") from exc
        raise InvalidRequestError(f"the source host {source.host} does not resolve") from exc
    except (UnicodeError, ValueError) as exc:  # a label IDNA refuses (empty, too long)
        raise InvalidRequestError(f"the source host {source.host!r} is not valid") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private and source.host.lower() not in allow_hosts:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise InvalidRequestError(
                f"the source host {source.host} resolves to a non-public address "
                f"({refused[0]}); private, loopback and link-local sources are refused "
                "unless the host is in MEDIAMILL_URL_INGEST_ALLOW_HOSTS"
            )
    return addresses


def check_source_url(
    url: str, *, allow_private: bool, allow_hosts: frozenset[str] = frozenset()
) -> SourceUrl:
    """What the API checks before accepting a URL: its form and, when the host
    resolves now, its addresses. A host that does not resolve yet is left to the
    worker (which checks again anyway, at fetch time)."""
    source = parse_source_url(url)
    with suppress(TransientError):
        resolve_addresses(source, allow_private=allow_private, allow_hosts=allow_hosts)
    return source


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header still names the host."""

    def __init__(self, host: str, port: int, address: str, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one checked address; SNI and certificate checks use the host name."""

    def __init__(
        self, host: str, port: int, address: str, timeout_s: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout_s, context=context)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _BoundedBody(io.RawIOBase):
    """A response body read in pieces, refused past `max_bytes` or past the deadline."""

    def __init__(
        self, response: http.client.HTTPResponse, url: str, max_bytes: int, deadline: float
    ) -> None:
        self.response, self.url = response, url
        self.max_bytes, self.deadline = max_bytes, deadline
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise ProcessingTimeoutError(f"fetching {self.url} ran past its time limit")
        want = READ_PIECE_BYTES if size is None or size < 0 else min(size, READ_PIECE_BYTES)
        try:
            piece = self.response.read1(want)
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"reading {self.url} failed: {exc}") from exc
        self.read_bytes += len(piece)
        if self.read_bytes > self.max_bytes:
            raise FileTooLargeError(
                f"{self.url} is larger than {self.max_bytes} bytes, "
                "the most a URL ingest may be (MEDIAMILL_URL_INGEST_MAX_BYTES, "
                "_UPLOAD_MAX_BYTES)"
            )
        return piece


def pinned_connection(
    source: SourceUrl, address: str, timeout_s: float
) -> http.client.HTTPConnection:
    """An (unopened) connection to `source` that goes to the checked `address` only,
    with the URL's host kept for the Host header and TLS verification."""
    if source.scheme == "https":
        return _PinnedHTTPSConnection(
            source.host, source.port, address, timeout_s, ssl.create_default_context()
        )
    return _PinnedHTTPConnection(source.host, source.port, address, timeout_s)


def _connect(
    source: SourceUrl, addresses: list[str], timeout_s: float
) -> http.client.HTTPConnection:
    last: OSError | None = None
    for address in addresses:
        conn = pinned_connection(source, address, timeout_s)
        try:
            conn.connect()
            return conn
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise InvalidRequestError(f"{source.url}: TLS certificate refused: {exc}") from exc
        except OSError as exc:
            conn.close()
            last = exc
    raise TransientError(f"cannot connect to {source.host}:{source.port}: {last}")


@contextmanager
def open_source_url(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
    read_timeout_s: float,
    allow_hosts: frozenset[str] = frozenset(),
) -> Iterator[io.RawIOBase]:
    """A streamed body of `url` (redirects followed and re-checked), bounded in size
    and wall-clock time. Errors: InvalidRequestError / ModelNotFoundError (permanent:
    the URL is refused, answers 4xx or is too big), ProcessingTimeoutError (the
    deadline passed), TransientError (network trouble or a 5xx: retried)."""
    deadline = time.monotonic() + timeout_s
    source = parse_source_url(url)
    for _hop in range(MAX_REDIRECTS + 1):
        addresses = resolve_addresses(
            source, allow_private=allow_private, allow_hosts=allow_hosts
        )
        conn = _connect(source, addresses, min(read_timeout_s, timeout_s))
        try:
            conn.putrequest("GET", source.target, skip_accept_encoding=True)
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("User-Agent", "mediamill-ingest")
            conn.endheaders()
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransientError(f"requesting {source.url} failed: {exc}") from exc
        try:
            status = response.status
            if status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise InvalidRequestError(f"{source.url} redirects without a Location")
                source = parse_source_url(urljoin(source.url, location))
                continue
            if status >= 500 or status in _TRANSIENT_STATUSES:
                raise TransientError(f"{source.url} answered {status} {response.reason}")
            if status in (404, 410):
                raise ModelNotFoundError(f"{source.url} answered {status} {response.reason}")
            if status != 200:
                raise InvalidRequestError(f"{source.url} answered {status} {response.reason}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FileTooLargeError(
                    f"{source.url} is {declared} bytes, larger than {max_bytes} bytes, "
                    "the most a URL ingest may be (MEDIAMILL_URL_INGEST_MAX_BYTES, "
                    "_UPLOAD_MAX_BYTES)"
                )
            yield _BoundedBody(response, source.url, max_bytes, deadline)
            return
        finally:
            conn.close()
    raise InvalidRequestError(f"{url} redirects more than {MAX_REDIRECTS} times")
