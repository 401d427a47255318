"""Slow and excess clients cannot stop `mediamill serve` (api/server.py): 5,000
connections that each send a request line, headers and one byte of a declared body,
with no key, held open on loopback; /health from another client still answers within
a second, memory stays bounded, and everything recovers when they close. Then the
guards themselves: the connection cap, the header deadline and the body idle timeout."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import closed_by_peer, slowloris

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
SLOW_CLIENTS = 5000
HOLD_S = 10.0
SLOW_REQUEST = (
    b"POST /v0/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _health_s(port: int) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}
    return time.monotonic() - started


class Server:
    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
        env.update(settings)
        self.log = tmp_path / "serve.log"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                _health_s(self.port)
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def more_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, SLOW_CLIENTS * 2 + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_slow(port: int, n: int) -> list[socket.socket]:
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(SLOW_REQUEST)
        sockets.append(s)
    return sockets


def test_five_thousand_slow_clients_do_not_stop_the_api(tmp_path: Path, more_files) -> None:
    server = Server(tmp_path, MEDIAMILL_HTTP_BODY_TIMEOUT_S="120")
    sockets: list[socket.socket] = []
    try:
        for _ in range(3):
            _health_s(server.port)
        rss_before = _rss_mb(server.process.pid)
        sockets = _open_slow(server.port, SLOW_CLIENTS)
        held_until = time.monotonic() + HOLD_S
        worst_s = 0.0
        while time.monotonic() < held_until:
            worst_s = max(worst_s, _health_s(server.port))
            time.sleep(0.5)
        rss_held = _rss_mb(server.process.pid)
        assert worst_s < 1.0, worst_s
        assert rss_held - rss_before < 100, (rss_before, rss_held)
        assert server.process.poll() is None
        for s in sockets:
            s.close()
        sockets = []
        deadline = time.monotonic() + 10
        while _health_s(server.port) > 0.2:
            assert time.monotonic() < deadline
        log = server.log.read_text()
        assert len(log.splitlines()) < 200, log[-3000:]  # no line per client
    finally:
        for s in sockets:
            s.close()
        server.stop()


def test_the_cap_and_the_timeouts_cut_what_they_should(tmp_path: Path, more_files) -> None:
    server = Server(
        tmp_path,
        MEDIAMILL_HTTP_MAX_CONNECTIONS="50",
        MEDIAMILL_HTTP_HEADER_TIMEOUT_S="1",
        MEDIAMILL_HTTP_BODY_TIMEOUT_S="1",
    )
    try:
        held = _open_slow(server.port, 50)
        refused = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert closed_by_peer(refused, 2.0), "a connection past the cap was kept"
        assert all(closed_by_peer(s, 5.0) for s in held), "a stalled body was kept"
        for s in held:
            s.close()
        # A slowloris: headers a byte at a time, never finished.
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        cut_after_s = slowloris(server.port, head, byte_delay_s=0.1, wait_s=2.0)
        assert cut_after_s is not None and cut_after_s < 5  # the header deadline
        # A slow but live upload (a chunk every 0.5 s) is not cut by the idle timeout.
        live = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        live.sendall(
            b"POST /v0/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 8\r\n\r\n"
        )
        for piece in (b"{", b'"a"', b":1", b"}  "):
            time.sleep(0.5)
            live.sendall(piece)
        answer = live.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer  # no key: refused, but answered
        live.close()
        assert _health_s(server.port) < 1.0
        assert "connections cut" in server.log.read_text()
    finally:
        server.stop()


def _exchange(port: int, payload: bytes, wait_s: float = 1.0) -> bytes:
    """Send `payload`, then read until the server closes or `wait_s` of silence."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        s.settimeout(wait_s)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_buffering_keeps_http_semantics(tmp_path: Path) -> None:
    """Held requests still behave as HTTP/1.1 says: pipelined requests are answered in
    turn (and a stalled pipelined one is cut like any other), bare-LF heads parse, and
    `Expect: 100-continue` gets its 100 before the client sends the body."""
    server = Server(
        tmp_path, MEDIAMILL_HTTP_BODY_TIMEOUT_S="2", MEDIAMILL_HTTP_HEADER_TIMEOUT_S="2"
    )
    try:
        get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        assert _exchange(server.port, get + get).count(b"HTTP/1.1 200") == 2
        assert _exchange(server.port, b"GET /health HTTP/1.0\n\n").startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(
                b"POST /v0/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            s.settimeout(2)
            assert s.recv(64).startswith(b"HTTP/1.1 100 Continue")
        started = time.monotonic()
        stalled = get + b"POST /v0/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1"
        answered = _exchange(server.port, stalled, wait_s=8)
        assert answered.count(b"HTTP/1.1 200") == 1
        assert time.monotonic() - started < 6  # cut at the body timeout, not kept
    finally:
        server.stop()
