"""A new user's first hour, as the README tells it: nothing configured, `mediamill
process` prints signed URLs, and `mediamill serve` (the command the output names)
opens every one of them; ffmpeg plays the printed HLS and DASH URLs through it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import fetch, play
from support import ROOT, free_port, stop_process

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
_URL = re.compile(r"^(\S+)\s+(http://\S+)$", re.M)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No MEDIAMILL_ setting but a data dir of its own and a free port for `serve`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    clean["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    clean["MEDIAMILL_HTTP_PORT"] = str(free_port())
    return clean


def mm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`mediamill serve` with no options, as the output of `process` says to run it."""
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['MEDIAMILL_HTTP_PORT']}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if fetch(f"{base}/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mediamill serve did not answer"
            time.sleep(0.1)
        yield base
    finally:
        stop_process(proc)
        log.close()


def test_every_url_process_prints_opens_under_mediamill_serve(
    env: dict[str, str], samples: dict[str, Path], served: str
) -> None:
    demo = ROOT / "scripts" / "demo"  # what the README's first command runs
    proc = subprocess.run(
        [str(demo), str(samples["video.mp4"])], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "installing" not in proc.stdout  # the tests' install serves the demo too
    printed = dict(_URL.findall(proc.stdout))
    assert {"HLS", "DASH"} <= set(printed)
    assert len(printed) >= 4, proc.stdout  # every rung, and the package's two manifests
    assert "open while `mediamill serve` runs" in proc.stdout
    assert all(url.startswith(f"{served}/cdn/") for url in printed.values()), printed
    stored = json.loads(mm(env, "process", str(samples["video.mp4"]), "--json").stdout)
    sha_by_name = {
        name: r["sha256"]
        for r in stored["renditions"]
        for name in printed
        if r.get("url") and r["url"].split("?")[0] == printed[name].split("?")[0]
    }
    for name, url in printed.items():
        resp = fetch(url)
        assert resp.status == 200, (name, url)
        assert resp.headers.get("Access-Control-Allow-Origin") == "*"
        if name in sha_by_name:
            assert hashlib.sha256(resp.body).hexdigest() == sha_by_name[name], name
            assert resp.content_type == "video/mp4"
    assert set(sha_by_name) == set(printed) - {"HLS", "DASH"}
    for name in ("HLS", "DASH"):
        streams = play(printed[name])
        assert {kind for kind, _ in streams} == {"video", "audio"}, (name, streams)
        for kind, frames in streams:  # the 2 s clip, whole, in every stream
            played_s = frames / 30 if kind == "video" else frames * 1024 / 48000
            assert played_s == pytest.approx(2, abs=0.1), (name, streams)
    for url in printed.values():  # a token for another path opens nothing
        base, query = url.split("?", 1) if "?" in url else (url, "")
        if query:
            assert fetch(f"{base}x?{query}").status == 403


def test_one_data_dir_per_user_whichever_folder_a_command_runs_from(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    """No MEDIAMILL_DATA_DIR: the platform's user data dir (XDG_DATA_HOME here), printed
    by `config check`; `process` from another folder finds the same asset there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    expected = tmp_path / "xdg" / "mediamill"
    runs = []
    for folder in ("one", "two"):
        cwd = tmp_path / folder
        cwd.mkdir()
        proc = subprocess.run(
            [*CLI, "process", str(samples["speech.wav"]), "--json"],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
        assert list(cwd.iterdir()) == []  # nothing made in the working directory
    assert runs[1]["job"]["result"] == {"deduplicated": True}
    assert (expected / "mediamill.db").is_file() and (expected / "signing-secret").is_file()
    check = subprocess.run(
        [*CLI, "config", "check", "--no-services"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert re.search(rf"resolved_data_dir\s+{re.escape(str(expected))}$", check.stdout, re.M)
    override = subprocess.run(
        [*CLI, "config", "check", "--no-services", "--json"],
        env={**env, "MEDIAMILL_DATA_DIR": str(tmp_path / "mine")}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(override.stdout)["effective"]["resolved_data_dir"] == str(tmp_path / "mine")


def _bitrate_bps(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return int(container.streams.audio[0].codec_context.bit_rate or container.bit_rate)


def test_native_routes_take_any_bitrate_the_encoder_delivers(
    env: dict[str, str], samples: dict[str, Path], tmp_path: Path
) -> None:
    """192 and 224 kb/s MP3 (item 10) through the CLI, the default profile and
    POST /v0/jobs, each encoded at that rate; the Content Automation route keeps its
    seven and refuses 224000 with a named 400."""
    from api_support import running_api

    from mediamill.config.settings import Settings

    out = tmp_path / "song.mp3"
    proc = mm(env, "transcode", str(samples["music.flac"]), "--format", "mp3", "--bitrate",
              "224000", "--channels", "2", "-o", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _bitrate_bps(out) == 224000
    profile = {**env, "MEDIAMILL_DEFAULT_AUDIO_RENDITIONS": "mp3:192000:2,opus:72000:2"}
    proc = mm(profile, "process", str(samples["music.flac"]), "--json")
    assert proc.returncode == 0, proc.stderr
    made = {r["spec"]["format"]: r for r in json.loads(proc.stdout)["renditions"]}
    assert made["mp3"]["spec"]["bitrate"] == 192000 and made["mp3"]["status"] == "ready"
    assert made["mp3"]["bitrate"] == pytest.approx(192000, rel=0.02)  # measured on the file
    assert made["opus"]["spec"]["bitrate"] == 72000 and made["opus"]["status"] == "ready"

    settings = Settings(_env_file=None, data_dir=tmp_path / "api")
    with running_api(settings) as api:
        stored = api.rt.store
        with samples["music.flac"].open("rb") as f:
            stored.put("media/song.flac", f)
        body = {"source": {"key": "media/song.flac"}, "defaultRenditions": False,
                "package": False,
                "renditions": [{"format": "mp3", "bitrate": 224000, "channels": 2}]}  # fmt: skip
        resp = api.client.post("/v0/jobs", json=body, headers=api.admin)
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 120
        while (job := api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json())[
            "status"
        ] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        asset_id = job["assetId"]
        meta = api.client.get(f"/v0/assets/{asset_id}/metadata", headers=api.read).json()
        (rendition,) = [r for r in meta["renditions"] if r["spec"]["format"] == "mp3"]
        with stored.local_path(rendition["storageKey"]) as path:
            assert _bitrate_bps(path) == 224000
        refused = api.client.get(
            f"/v0/assets/{asset_id}",
            params={"format": "mp3", "bitrate": 224000, "channels": 2},
            headers=api.read,
            follow_redirects=False,
        )
        assert refused.status_code == 400 and "supported bitrates" in refused.text


def test_a_bad_upload_is_one_log_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's log (item 7): an ordinary bad upload is a 422 to the caller and one
    INFO line naming the error in the log; no traceback, no "Retries exceeded"."""
    import logging

    from api_support import running_api

    from mediamill.config.settings import Settings

    with caplog.at_level(logging.INFO), running_api(
        Settings(_env_file=None, data_dir=tmp_path / "data")
    ) as api:
        resp = api.client.post(
            "/v0/assets?wait=30",
            files={"assetfile": ("song.flac", b"fLaC but nothing a decoder can read" * 50)},
            headers=api.admin,
        )
    assert resp.status_code == 422, resp.text
    name = resp.json()["name"]
    assert name in {"CorruptMediaError", "UnsupportedMediaError"}
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    failed = [r for r in caplog.records if " failed: " in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.INFO and name in failed[0].getMessage()
    assert not any("Retries exceeded" in r.getMessage() for r in caplog.records)
