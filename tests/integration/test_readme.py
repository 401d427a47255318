"""The README's quickstart, run exactly as printed (issue 16, item 9), so it cannot rot:
every `sh` block of "Five minutes" (up to the production edge), in order, in one bash,
in a folder holding `song.flac`, with nothing configured but a fresh home directory.
`mediamill serve &` takes port 8000, as the README says."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import av
import pytest
from support import ROOT, make_sample

pytestmark = pytest.mark.integration
README = ROOT / "README.md"


def quickstart() -> list[str]:
    """The `sh` blocks of the README's "Five minutes", before the production edge's."""
    text = README.read_text()
    section = text[text.index("## Five minutes") : text.index("The signed URLs open at")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5
    return blocks


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("port 8000 is taken: the README's `mediamill serve` needs it")
    work = tmp_path / "work"
    make_sample(work / "song.flac", kind="music", duration_s=5.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAMILL_", "XDG_"))}
    env["HOME"] = str(tmp_path / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    markers = [f"echo '=== block {i}'\n{block}" for i, block in enumerate(quickstart())]
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + "\n".join(
        markers
    )
    proc = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    # uvicorn's access log shares the terminal (stdout) with curl's answers.
    printed = re.sub(r'INFO: +[\d.:]+ - "[^"]*" \d+[^\n]*\n?', "", proc.stdout)
    out = dict(re.findall(r"=== block (\d+)\n(.*?)(?==== block|\Z)", printed, flags=re.S))

    asset_id = subprocess.run(
        ["sha256sum", "song.flac"], cwd=work, capture_output=True, text=True, check=True
    ).stdout[:64]
    first = out["0"]
    assert "open while `mediamill serve` runs" in first  # process named the command
    analysed, *_ = _objects(first[first.index("\n{") :])  # analyse --json, after the tables
    assert analysed["originalAssetId"] == asset_id and analysed["lufs"] is not None
    assert _objects(out["1"]) == [{"status": "ok"}], out["1"]
    uploaded, metadata = _objects(out["2"])
    assert uploaded["originalAssetId"] == asset_id and uploaded["lufs"] is not None
    assert metadata["originalAssetId"] == asset_id
    (streams,) = _objects(out["3"])
    assert streams["hlsUrl"].startswith("http://127.0.0.1:8000/cdn/p/")
    with av.open(str(work / "song.mp3")) as mp3:  # the 302, followed to the signed file
        assert mp3.streams.audio[0].codec_context.name.startswith("mp3")
        assert mp3.duration / 1e6 == pytest.approx(5.0, abs=0.2)
    put, complete = _objects(out["4"])
    assert put["receivedBytes"] == (work / "song.flac").stat().st_size
    assert complete["id"] == put["id"] and complete["status"] != "awaiting_upload", complete
    data_dir = tmp_path / "home" / ".local" / "share" / "mediamill"
    assert (data_dir / "mediamill.db").is_file()  # the user's data dir, not the folder
    assert sorted(p.name for p in work.iterdir()) == ["song.flac", "song.mp3", "upload.json"]


def _objects(text: str) -> list:
    """The JSON values in `text`, one after another (curl prints no newline after one)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
