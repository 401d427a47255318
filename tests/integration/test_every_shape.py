"""Video of every shape (issue 16, item 2): audio only, video only and both, through
`mediamill process` and through the API, each rendition decoded and each package played
through the embedded edge by ffmpeg's HLS and DASH demuxers and by the web players
(hls.js, dash.js in Chromium); a video below the smallest
rung gets one rung at its own size, and a 1x1 video is refused with a named error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest
from edge_support import play, play_in_browser
from support import free_port, serving

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.pipeline.ffmpeg import ffmpeg_binary
from mediamill.storage.api_keys import create_api_key

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
DURATION_S = 3.0
# What each shape's streams are: (video size or None, has audio).
SHAPES = {
    "audio-only": (None, True),
    "video-only": ((320, 240), False),
    "video-and-audio": ((320, 240), True),
    "below-the-ladder-odd": ((175, 143), True),  # under 240p, odd: one even rung, 174x142
}


def make_clip(path: Path, size: tuple[int, int] | None, audio: bool) -> Path:
    """A 3 s test clip: testsrc2 video (H.264) and/or a sine (AAC or FLAC)."""
    args = [ffmpeg_binary(), "-v", "error", "-y"]
    if size:
        w, h = size
        args += ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=30:duration={DURATION_S}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={DURATION_S}"]
        args += ["-ac", "2"]
    if size:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        args += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if size[0] % 2 or size[1] % 2 else []
    if audio:
        args += ["-c:a", "aac" if size else "flac"]
    subprocess.run([*args, str(path)], check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shapes")
    return {
        name: make_clip(d / f"{name}.{'mp4' if size else 'flac'}", size, audio)
        for name, (size, audio) in SHAPES.items()
    }


def streams_of(path_or_url: str) -> tuple[list[tuple[int, int]], int]:
    """(video sizes, audio stream count) of a file, as PyAV opens it."""
    with av.open(path_or_url) as container:
        sizes = [(s.codec_context.width, s.codec_context.height) for s in container.streams.video]
        return sizes, len(container.streams.audio)


def check_package_plays(hls: str, dash: str, shape: str) -> None:
    """Every stream of both manifests plays whole; the kinds are the original's."""
    size, audio = SHAPES[shape]
    for url in (hls, dash):
        streams = play(url)
        kinds = {kind for kind, _ in streams}
        assert kinds == ({"video"} if size else set()) | ({"audio"} if audio else set()), url
        for kind, frames in streams:
            played_s = frames / 30 if kind == "video" else frames * 1024 / 48000
            assert played_s == pytest.approx(DURATION_S, abs=0.1), (url, streams)
    master = httpx.get(hls).text
    assert ("TYPE=AUDIO" in master) == bool(size and audio), master
    for kind, url in (("hls", hls), ("dash", dash)):  # the web players, in Chromium
        report = play_in_browser(kind, url)
        assert report["ok"] and report["ended"], (shape, kind, report)
        assert report["duration"] == pytest.approx(DURATION_S, abs=0.1), report
        assert (report["videoFrames"] >= DURATION_S * 30 - 2) == bool(size), (shape, report)
        assert (report["audioBytes"] > 0) == audio, (shape, kind, report)


def check_renditions(renditions: list[dict], shape: str, fetch_url) -> None:
    size, audio = SHAPES[shape]
    assert renditions and {r["status"] for r in renditions} == {"ready"}, renditions
    for r in renditions:
        sizes, audio_streams = streams_of(fetch_url(r))
        if size is None:
            assert sizes == [] and audio_streams == 1
            continue
        assert audio_streams == (1 if audio else 0), r["spec"]
        ((width, height),) = sizes
        assert height % 2 == 0 and width % 2 == 0 and height <= size[1] + 1
        assert (r["width"], r["height"]) == (width, height)
    if shape == "below-the-ladder-odd":
        assert [(r["width"], r["height"]) for r in renditions] == [(174, 142)]


def test_process_and_the_edge_handle_every_shape(clips: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env |= {"MEDIAMILL_DATA_DIR": str(tmp_path / "data"), "MEDIAMILL_HTTP_PORT": str(port)}
    results = {}
    for shape, clip in clips.items():
        proc = subprocess.run(
            [*CLI, "process", str(clip), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{shape}: {proc.stderr}"
        results[shape] = json.loads(proc.stdout)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", http_port=port)
    with serving(create_app(settings), port):
        for shape, out in results.items():
            check_renditions(out["renditions"], shape, lambda r: r["url"])
            (package,) = out["packages"]
            assert package["status"] == "ready", (shape, package)
            check_package_plays(package["hls"], package["dash"], shape)


def test_the_api_handles_every_shape(clips: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", http_port=port)
    app = create_app(settings)
    with serving(app, port) as base:
        with app.state.runtime.db.session() as s:
            key = {"X-API-Key": create_api_key(s, "admin", "shapes").api_key}
        client = httpx.Client(base_url=base, headers=key, timeout=60)
        for shape, clip in clips.items():
            with clip.open("rb") as f:
                resp = client.post("/v0/assets?wait=60", files={"assetfile": (clip.name, f)})
            assert resp.status_code == 201, (shape, resp.text)
            asset_id = resp.json()["originalAssetId"]
            deadline = time.monotonic() + 120
            while True:
                streams = client.get(f"/v0/assets/{asset_id}/streams")
                if streams.status_code == 200:
                    break
                assert streams.status_code == 409, (shape, streams.text)
                assert time.monotonic() < deadline, f"{shape}: no package"
                time.sleep(0.2)
            metadata = client.get(f"/v0/assets/{asset_id}/metadata").json()

            def redirected(r: dict, asset_id: str = asset_id) -> str:
                spec = r["spec"]
                if spec["format"] != "mp4":
                    query = {k: spec[k] for k in ("format", "bitrate", "channels")}
                    got = client.get(f"/v0/assets/{asset_id}", params=query)
                    assert got.status_code == 302, got.text
                    return got.headers["location"]
                return _signed(app, r)

            check_renditions(metadata["renditions"], shape, redirected)
            body = streams.json()
            check_package_plays(body["hlsUrl"], body["dashUrl"], shape)


def _signed(app, rendition: dict) -> str:
    """A signed URL of a video rung (the Content Automation routes ask by audio fields)."""
    from mediamill.workers.delivery import sign_file_url

    return sign_file_url(app.state.runtime, rendition["storageKey"]).url


def test_a_1x1_video_is_refused_with_a_named_error(tmp_path: Path) -> None:
    """x264 encodes 1x1 in 4:4:4; no rung can be made of it (renditions are at least
    2x2 and never upscaled): one named error, exit 1, no traceback."""
    clip = tmp_path / "dot.mp4"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i",
         "color=c=red:size=1x1:rate=10:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv444p",
         str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [*CLI, "--log-level", "INFO", "process", str(clip)], env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: UnsupportedMediaError: a 1x1 px video is too small" in proc.stderr
    assert "Traceback" not in proc.stderr
    failed_lines = [line for line in proc.stderr.splitlines() if " failed: " in line]
    assert len(failed_lines) == 1 and " INFO " in failed_lines[0], proc.stderr
