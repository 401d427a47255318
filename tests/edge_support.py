"""Running the nginx edge in tests: nginx on a free port with the configuration
`mediamill edge nginx-conf` prints over a local store, and plain HTTP to reach it
(urllib without proxies; raw paths with http.client). Tokens are computed here the
way nginx's secure_link documentation does, independently of the signer, so a signer
bug cannot hide an edge bug. With CI=true a missing nginx fails; elsewhere it skips."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import IN_CI, free_port, make_sample, serving, stop_process

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.packaging import Track, package_tracks
from mediamill.pipeline.signing import NginxSigner
from mediamill.pipeline.transcode import plan_output, produce
from mediamill.schemas.renditions import parse_video_ladder
from mediamill.storage.blobs import BlobStore, LocalBlobStore

START_TIMEOUT_S = 20.0


def md5_token(text: str) -> str:
    """base64url(MD5(text)) without padding: nginx secure_link's token of `text`."""
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    def header_set(self, name: str) -> set[str]:
        """A comma-separated header's items, lower-cased."""
        return {item.strip().lower() for item in (self.headers.get(name) or "").split(",")}


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """One request with urllib (no proxies); error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.headers, exc.read())


def raw_get(base_url: str, path: str) -> Response:
    """GET a path exactly as written (`..` and `%2e` included): urllib may tidy paths."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path + path)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def assert_cors(resp: Response) -> None:
    assert resp.headers.get("Access-Control-Allow-Origin") == "*"
    assert {"content-length", "content-range"} <= resp.header_set("Access-Control-Expose-Headers")


def nginx_binary() -> str:
    """The nginx binary; missing: a failure in CI, a skip elsewhere (scripts/test installs it)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    if found is None:
        message = "nginx is not installed (scripts/test installs it with ensure_nginx)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def running_nginx(conf: Path, state_dir: Path, port: int) -> Iterator[str]:
    """Run nginx in the foreground on `conf` until the block ends; yields its base URL.

    As root, workers would drop to `nobody`, which cannot enter pytest's 0700 temp
    dirs: `user root;` keeps them able to read the store.
    """
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    log_path = state_dir / "nginx.out"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [nginx_binary(), "-p", str(state_dir), "-c", str(conf), "-g", directives],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        error_log = state_dir / "error.log"
        text = log_path.read_text(errors="replace")
        return text + (error_log.read_text(errors="replace") if error_log.exists() else "")

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited with code {proc.returncode}:\n{logs()}")
            try:
                raw_get(base_url, "/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not answer on {base_url}:\n{logs()}")
                time.sleep(0.05)
        yield base_url
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class Edge:
    base_url: str
    store: BlobStore
    signer: NginxSigner

    def put(self, key: str, data: bytes) -> bytes:
        self.store.put(key, io.BytesIO(data))
        return data


@contextlib.contextmanager
def local_edge(tmp: Path, secret: str) -> Iterator[Edge]:
    """nginx on a free port with the configuration `mediamill edge nginx-conf` prints
    for a local store under `tmp`, signing with `secret`."""
    from mediamill.cli import main
    from mediamill.config.settings import get_settings

    nginx_binary()
    store = LocalBlobStore(tmp / "store")
    state_dir = tmp / "state"
    port = free_port()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("MEDIAMILL_"):
                mp.delenv(var)
        mp.setenv("MEDIAMILL_DATA_DIR", str(tmp / "data"))
        mp.setenv("MEDIAMILL_SIGNING_SECRET", secret)
        get_settings.cache_clear()
        try:
            with contextlib.redirect_stdout(out):
                argv = ["edge", "nginx-conf", "--listen", f"127.0.0.1:{port}"]
                argv += ["--root", str(store.root), "--state-dir", str(state_dir)]
                assert main(argv) == 0
        finally:
            get_settings.cache_clear()
    assert state_dir.is_dir()  # created by the command: nginx needs it to start
    conf = tmp / "nginx.conf"
    conf.write_text(out.getvalue())
    with running_nginx(conf, state_dir, port) as base_url:
        yield Edge(base_url, store, NginxSigner(base_url, secret))


@contextlib.contextmanager
def embedded_edge(tmp: Path, secret: str) -> Iterator[Edge]:
    """`mediamill serve`'s app (embedded default: local store under `tmp`, SQLite, the
    in-process worker) on a free port, its embedded edge at `/cdn`."""
    from mediamill.api.app import create_app
    from mediamill.config.settings import Settings

    port = free_port()
    settings = Settings(
        _env_file=None,
        data_dir=tmp / "data",
        storage_url=(tmp / "store").as_uri(),
        signing_secret=secret,
        http_port=port,
    )
    with serving(create_app(settings), port) as base_url:
        edge_url = settings.resolved_cdn_base_url
        assert edge_url == f"{base_url}/cdn"
        yield Edge(edge_url, LocalBlobStore(tmp / "store"), NginxSigner(edge_url, secret))


def play(url: str) -> list[tuple[str, int]]:
    """(media type, frames) of every stream ffmpeg's HLS or DASH demuxer decodes from a
    manifest URL, in stream order: a player's view of a whole package."""
    from mediamill.pipeline.ffmpeg import ffmpeg_binary

    out = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", url, "-map", "0", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"{url}: {out.stderr}"
    kinds = dict(re.findall(r"^#media_type (\d+): (\w+)$", out.stdout, flags=re.M))
    frames = dict.fromkeys(kinds, 0)
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            frames[line.split(",", 1)[0].strip()] += 1
    return [
        (kinds[index], count) for index, count in sorted(frames.items(), key=lambda i: int(i[0]))
    ]


PLAYERS = Path(__file__).resolve().parent / "players"


def _node_and_chromium() -> tuple[str, str]:
    """node and Chromium; missing (or the npm players): a failure in CI, a skip elsewhere."""
    chromium = shutil.which("chromium")
    node = shutil.which("node")
    if chromium is None or node is None or not (PLAYERS / "node_modules" / "hls.js").is_dir():
        message = (
            "Chromium, node or tests/players/node_modules missing (scripts/test installs them)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node, chromium


def play_with_beacon(
    kind: str, api_base: str, api_key: str, asset_id: str, page_port: int, timeout_s: float = 90.0
) -> dict:
    """Play an asset through a playback session in Chromium with hls.js (`kind` "hls")
    or dash.js ("dash") and the API's beacon script, from a page served at
    http://127.0.0.1:`page_port` (tests/players/beacon.mjs); its report: ok,
    sessionId, ended, errors."""
    import json

    node, chromium = _node_and_chromium()
    out = subprocess.run(
        [node, str(PLAYERS / "beacon.mjs"), kind, api_base, api_key, asset_id,
         "--page-port", str(page_port), "--chromium", chromium,
         "--timeout-ms", str(int(timeout_s * 1000))],
        capture_output=True, text=True, timeout=timeout_s + 60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def play_in_browser(kind: str, url: str, timeout_s: float = 90.0) -> dict:
    """Play an HLS (`kind` "hls", hls.js) or DASH ("dash", dash.js) URL to its end in
    Debian's Chromium (tests/players/play.mjs); its report: ok, ended, videoFrames,
    audioBytes (decoded), audioTracks, errors. Missing Chromium or the npm players: a
    failure in CI, a skip elsewhere (scripts/test installs both)."""
    import json

    node, chromium = _node_and_chromium()
    out = subprocess.run(
        [node, str(PLAYERS / "play.mjs"), kind, url, "--chromium", chromium,
         "--timeout-ms", str(int(timeout_s * 1000))],
        capture_output=True, text=True, timeout=timeout_s + 60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- a real package ---------------------------------------------------------------------


@functools.cache
def _real_package() -> Path:
    """A real package (two video rungs + the audio track, 4 s CMAF segments) made once
    per test session by the packager from renditions of a generated 9-second clip."""
    work = Path(tempfile.mkdtemp(prefix="edge-package-"))
    source = make_sample(work / "clip.mp4", kind="video", duration_s=9.0)
    analysis = analyse_file(source)
    specs = parse_video_ladder("360:600000,240:300000")
    outputs = [plan_output(s, work / f"r{i}.mp4", analysis.loudness) for i, s in enumerate(specs)]
    produce(source, outputs, analysis.media, timeout_s=300)
    tracks = [Track(o.path, o.spec, 30.0) for o in outputs]
    package_tracks(tracks, tracks[:1], work / "package", segment_s=4, timeout_s=120)
    return work / "package"


def make_package_tree(store_root: Path) -> tuple[str, str]:
    """Store a real HLS + DASH package under a fresh asset id; (asset id, package id)."""
    store = LocalBlobStore(store_root)
    asset_id = hashlib.sha256(os.urandom(32)).hexdigest()
    package_id = f"pkg-{uuid.uuid4().hex[:16]}"  # as package_id_for makes them; unique here
    prefix = f"packages/{asset_id}/{package_id}"
    for path in sorted(_real_package().iterdir()):
        with path.open("rb") as f:
            store.put(f"{prefix}/{path.name}", f)
    return asset_id, package_id
