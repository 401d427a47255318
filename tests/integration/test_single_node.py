"""A single node: `mediamill serve` with only a store URL (a directory) or only a
PostgreSQL URL, and no broker. The queue is then in the server's process, so the server
runs the worker: an upload goes all the way, and its webhook events arrive."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
WANTED_EVENTS = {"asset.created", "asset.analysed", "rendition.ready", "package.ready"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    """A local webhook receiver: its URL and the event types it received."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(json.loads(body)["type"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_port}/hooks", received
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["store-only", "database-only"])
def single_node_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    env["MEDIAMILL_WEBHOOK_ALLOW_HOSTS"] = "localhost"
    if request.param == "store-only":
        env["MEDIAMILL_STORAGE_URL"] = (tmp_path / "srv-media").as_uri()
        yield env
    else:
        from support import fresh_postgres_database

        with fresh_postgres_database() as url:
            env["MEDIAMILL_DATABASE_URL"] = url
            subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
            yield env


def _cli_json(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_serve_without_a_broker_runs_the_work_and_delivers_webhooks(
    single_node_env: dict[str, str],
    receiver: tuple[str, list[str]],
    samples: dict[str, Path],
    tmp_path: Path,
) -> None:
    env = single_node_env
    url, received = receiver
    _cli_json(env, "webhooks", "add", url, "--events", "*", "--json")
    key = _cli_json(env, "keys", "create", "--scope", "admin", "--json")
    port = _free_port()
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"x-client-id": key["clientId"], "x-authentication-token": key["token"]}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/health").close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        boundary = "mediamill-test-boundary"
        data = samples["speech.wav"].read_bytes()
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"assetfile\"; "
            f"filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{base}/v0/assets",
            data=body,
            headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with urllib.request.urlopen(request) as r:
            assert r.status == 201
        deadline = time.monotonic() + 90
        while not set(received) >= WANTED_EVENTS:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (received, log.read_text()[-3000:])
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if "MEDIAMILL_STORAGE_URL" in env:  # the configured directory holds the media
        store = Path(env["MEDIAMILL_STORAGE_URL"].removeprefix("file://"))
        assert any(store.glob("originals/*")) and any(store.glob("packages/*/*/master.m3u8"))
