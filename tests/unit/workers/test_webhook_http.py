"""One webhook POST (workers/webhook_http.py) against receivers on loopback.

The contract: the host is resolved once and every address judged (unless the host is
allow-listed); the POST goes to a checked address, falling back to the next one only
when a connection cannot be made; the answer comes back as an `HttpResult` (status,
the first bytes up to the caps, an error text for anything but a 2xx, Retry-After in
seconds), and network trouble or a refused URL is an `HttpResult` too, never raised.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mediamill.schemas.errors import RefusedUrlError
from mediamill.workers import webhook_http
from mediamill.workers.webhook_http import (
    USER_AGENT,
    checked_addresses,
    parse_retry_after,
    post_webhook,
)

PUBLIC = "93.184.215.14"
LOCAL = frozenset({"127.0.0.1", "hooks.test"})


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A loopback HTTP receiver: `answer` writes the reply; every request is kept."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    answer: Callable[[BaseHTTPRequestHandler], None] | None = None


def _reply(status: int, body: bytes = b"ok", **headers: str) -> Callable:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(answer=_reply(200))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.hits.append(Hit(self.path, headers, body))
            assert state.answer is not None
            state.answer(self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def fake_resolve(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Replace the resolver seam; returns the list of hosts looked up."""
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    monkeypatch.setattr(webhook_http, "resolve", resolve)
    return lookups


def post(url: str, *, max_response_bytes: int = 64 * 1024, **headers: str):
    return post_webhook(
        url,
        b'{"id":"evt_1"}',
        dict(headers),
        allow_hosts=LOCAL,
        timeout_s=5,
        max_response_bytes=max_response_bytes,
    )


def test_checked_addresses_judges_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """All addresses are returned when public (or allow-listed); any other is refused."""
    fake_resolve(
        monkeypatch,
        {
            "ok.example.com": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            "mixed.example.com": [PUBLIC, "10.0.0.7"],
            "hooks.test": ["10.0.0.7"],
            "empty.example.com": [],
        },
    )
    assert checked_addresses("https://ok.example.com/in", frozenset()) == (
        [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        False,
    )
    assert checked_addresses("http://hooks.test/in", LOCAL) == (["10.0.0.7"], True)
    refusals = {
        "https://mixed.example.com/in": "mixed.example.com resolves to a non-public address "
        "(10.0.0.7)",
        "http://ok.example.com/in": "ok.example.com: webhook URLs must be https",
        "https://gone.example.com/in": "gone.example.com does not resolve: ",
        "https://empty.example.com/in": "empty.example.com does not resolve",
        "https://user:pw@ok.example.com/in": "credentials in the source URL",
    }
    for url, message in refusals.items():
        with pytest.raises(RefusedUrlError) as caught:
            checked_addresses(url, frozenset())
        assert caught.value.message.startswith(message), (url, caught.value.message)


def test_the_post_carries_the_body_and_the_fixed_headers(server: Server) -> None:
    """Caller headers are sent, but type, length, agent and encoding are the module's."""
    result = post(
        f"http://127.0.0.1:{server.port}/in?x=1",
        **{"webhook-id": "evt_1", "Content-Type": "text/plain", "User-Agent": "spoof"},
    )
    assert (result.status, result.excerpt, result.error) == (200, b"ok", None)
    assert result.retry_after_s is None and result.duration_ms >= 0
    [hit] = server.hits
    assert hit.path == "/in?x=1" and hit.body == b'{"id":"evt_1"}'
    assert hit.headers["webhook-id"] == "evt_1"
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["content-length"] == str(len(hit.body))
    assert hit.headers["user-agent"] == USER_AGENT
    assert hit.headers["accept-encoding"] == "identity"


def test_a_failing_answer_is_reported_with_its_retry_after_and_a_capped_excerpt(
    server: Server,
) -> None:
    """Non-2xx: status, `answered <status> <reason>`, Retry-After, bytes up to the cap."""
    server.answer = _reply(503, b"busy " * 1000, Retry_After="30")
    result = post(f"http://127.0.0.1:{server.port}/in")
    assert (result.status, result.error, result.retry_after_s) == (
        503,
        "answered 503 Service Unavailable",
        30.0,
    )
    assert result.excerpt == (b"busy " * 1000)[: webhook_http.EXCERPT_BYTES]
    small = post(f"http://127.0.0.1:{server.port}/in", max_response_bytes=10)
    assert small.excerpt == b"busy busy "
    server.answer = _reply(307, b"", Location="https://elsewhere.example/")
    moved = post(f"http://127.0.0.1:{server.port}/in")
    assert moved.status == 307
    assert moved.error == "redirect to 'https://elsewhere.example/' not followed"
    assert len(server.hits) == 3


def test_an_address_that_refuses_the_connection_falls_back_to_the_next(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.2 has no listener: the POST goes on to 127.0.0.1; with none left, an error."""
    fake_resolve(monkeypatch, {"hooks.test": ["127.0.0.2", "127.0.0.1"]})
    result = post(f"http://hooks.test:{server.port}/in")
    assert result.status == 200 and result.error is None
    assert [h.headers["host"] for h in server.hits] == [f"hooks.test:{server.port}"]
    fake_resolve(monkeypatch, {"hooks.test": ["127.0.0.2"]})
    nothing = post(f"http://hooks.test:{server.port}/in")
    assert nothing.status is None and nothing.excerpt == b""
    assert (nothing.error or "").startswith("cannot connect to 127.0.0.2: ")
    assert len(server.hits) == 1


def test_no_answer_and_refused_urls_come_back_as_results(server: Server) -> None:
    """A receiver that hangs up, or a URL that is refused, is an HttpResult, not a raise."""

    def hang_up(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    server.answer = hang_up
    dropped = post(f"http://127.0.0.1:{server.port}/in")
    assert dropped.status is None
    assert (dropped.error or "").startswith("request failed: RemoteDisconnected")
    refused = post_webhook(
        f"http://127.0.0.1:{server.port}/in",
        b"{}",
        {},
        allow_hosts=frozenset(),
        timeout_s=5,
        max_response_bytes=1024,
    )
    assert refused.status is None
    assert refused.error == "refused: 127.0.0.1: webhook URLs must be https"
    assert len(server.hits) == 1  # the refused URL was never contacted


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_an_untrusted_certificate_is_refused_without_trying_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """https verifies the certificate: a self-signed one ends the attempt, no request sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    handshakes: list[str] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                handshakes.append(tls.recv(1).decode() or "completed")
        except (OSError, ssl.SSLError) as exc:
            handshakes.append(type(exc).__name__)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    fake_resolve(monkeypatch, {"hooks.test": ["127.0.0.1", "127.0.0.1"]})
    with listener:
        result = post(f"https://hooks.test:{port}/in")
        thread.join(5)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no second connection, to the second address
    assert result.status is None
    assert (result.error or "").startswith("TLS certificate refused: ")
    assert "self-signed" in (result.error or "") or "self signed" in (result.error or "")
    assert handshakes and handshakes[0] != "completed"


def test_retry_after_edge_cases() -> None:
    """A past date is 0 s, padding is ignored, non-integers and negatives are no value."""
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    past = format_datetime(now - dt.timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 -0000", now) == 30.0  # naive: UTC
    assert parse_retry_after(" 12 ", now) == 12.0
    for value in ("1.5", "-5", "", None):
        assert parse_retry_after(value, now) is None, value


def test_a_non_ascii_path_is_sent_percent_encoded(server: Server) -> None:
    """A registered URL with a non-ASCII path is delivered, percent-encoded as UTF-8
    (http.client raised UnicodeEncodeError on it, an 'internal error' on every try)."""
    result = post(f"http://127.0.0.1:{server.port}/hoök?q=ü&already=%C3%A9")
    assert result.status == 200 and result.error is None
    assert [h.path for h in server.hits] == ["/ho%C3%B6k?q=%C3%BC&already=%C3%A9"]
