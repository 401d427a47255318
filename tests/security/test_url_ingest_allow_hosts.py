"""Issue 15 item 8: URL ingest has an allow-list (`MEDIAMILL_URL_INGEST_ALLOW_HOSTS`),
matched exactly and checked at every redirect hop, over real HTTP: a media server on
127.0.0.1 is reachable when listed, `localhost` (the same machine, another name) is
not, and an allowed host cannot redirect a job to a host that is not."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import Api, running_api
from support import wait_job

from mediamill.config.settings import Settings

pytestmark = pytest.mark.integration


class _Server(http.server.ThreadingHTTPServer):
    media: bytes
    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        port = self.server.server_address[1]
        redirects = {
            "/to-localhost": f"http://localhost:{port}/music.ogg",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-self": f"http://127.0.0.1:{port}/music.ogg",
        }
        if self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.end_headers()
            return
        if self.path != "/music.ogg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.media)))
        self.end_headers()
        self.wfile.write(self.server.media)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def media_server(samples: dict[str, Path]) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.media = samples["music.ogg"].read_bytes()
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(embedded_env: Path) -> Iterator[Api]:
    settings = Settings(url_ingest_allow_hosts="127.0.0.1")
    assert settings.allow_private_url_ingest is False
    with running_api(settings, run_worker=True) as running:
        yield running


def _post(api: Api, url: str):
    return api.client.post("/v0/jobs", json={"source": {"url": url}}, headers=api.admin)


def test_a_listed_host_is_ingested_and_redirects_to_itself_are_followed(
    api: Api, media_server: _Server
) -> None:
    port = media_server.server_address[1]
    for path in ("/music.ogg", "/to-self"):
        r = _post(api, f"http://127.0.0.1:{port}{path}")
        assert r.status_code == 201, r.text
        job = wait_job(api.rt, r.json()["id"], timeout_s=120)
        assert job.status.value == "succeeded", job.error
        assert job.asset_id is not None


def test_another_name_for_the_same_machine_is_not_listed(api: Api, media_server: _Server) -> None:
    port = media_server.server_address[1]
    for host in ("localhost", "127.0.0.2"):
        r = _post(api, f"http://{host}:{port}/music.ogg")
        assert r.status_code == 400, r.text
        assert "MEDIAMILL_URL_INGEST_ALLOW_HOSTS" in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "host"), [("/to-localhost", "localhost"), ("/to-metadata", "169.254.169.254")]
)
def test_a_listed_host_cannot_redirect_to_an_unlisted_one(
    api: Api, media_server: _Server, path: str, host: str
) -> None:
    """The POST passes (the first hop is listed); the worker checks the redirect's host
    and fails the job without fetching from it."""
    port = media_server.server_address[1]
    before = len(media_server.hits)
    r = _post(api, f"http://127.0.0.1:{port}{path}")
    assert r.status_code == 201, r.text
    job = wait_job(api.rt, r.json()["id"], timeout_s=120)
    assert job.status.value == "failed"
    assert job.error is not None and job.error.name == "InvalidRequestError"
    assert host in job.error.message and "non-public" in job.error.message
    assert media_server.hits[before:] == [path]  # the redirect's target was never fetched
