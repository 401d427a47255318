"""Issue 15 item 7: no silent truncation. Media is processed whole or fails with a named
error: a chained Ogg whose second link changes the sample rate was ingested as its first
2 seconds; a 1x1 video "succeeded" with nothing to play. Real files made by ffmpeg, run
through the API and an in-process worker; what was written is decoded and measured."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from api_support import Api, running_api
from support import wait_job

from mediamill.pipeline.ffmpeg import ffmpeg_binary
from mediamill.storage import repo

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 180


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", *args], check=True, timeout=120)


def _vorbis(path: Path, rate_hz: int, frequency_hz: int) -> bytes:
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=f={frequency_hz}:d=2:r={rate_hz}",
        "-c:a",
        "libvorbis",
        str(path),
    )
    return path.read_bytes()


def _video(path: Path, size: str, pix_fmt: str) -> Path:
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=c=red:s={size}:d=2:r=25",
        "-f", "lavfi", "-i", "sine=d=2",
        "-c:v", "libx264", "-pix_fmt", pix_fmt, "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


@pytest.fixture
def api(embedded_env: Path) -> Iterator[Api]:
    with running_api(run_worker=True) as running:
        yield running


def _ingest(api: Api, path: Path) -> object:
    key = f"inbox/{path.name}"
    with path.open("rb") as f:
        api.rt.store.put(key, f)
    r = api.client.post("/v0/jobs", json={"source": {"key": key}}, headers=api.admin)
    assert r.status_code == 201, r.text
    return wait_job(api.rt, r.json()["id"], timeout_s=JOB_TIMEOUT_S)


def _decoded_s(api: Api, key: str) -> float:
    with api.rt.store.local_path(key) as path, av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def test_a_chained_ogg_that_changes_rate_fails_with_a_named_error(api: Api, tmp_path: Path) -> None:
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(
        _vorbis(tmp_path / "a.ogg", 44100, 440) + _vorbis(tmp_path / "b.ogg", 8000, 880)
    )
    job = _ingest(api, chained)
    assert job.status.value == "failed"
    assert job.error is not None and job.error.name == "UnsupportedMediaError"
    assert "changes format at 2.00 s" in job.error.message
    assert job.asset_id is not None
    with api.rt.db.session() as s:
        assert repo.list_renditions(s, job.asset_id) == []


def test_a_chained_ogg_of_one_format_is_ingested_whole(api: Api, tmp_path: Path) -> None:
    chained = tmp_path / "chained-same.ogg"
    chained.write_bytes(
        _vorbis(tmp_path / "a.ogg", 44100, 440) + _vorbis(tmp_path / "c.ogg", 44100, 660)
    )
    job = _ingest(api, chained)
    assert job.status.value == "succeeded", job.error
    with api.rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id))
        renditions = repo.list_renditions(s, job.asset_id)
    assert asset.duration_ms == pytest.approx(4000, abs=60)
    assert renditions and all(r.status.value == "ready" for r in renditions)
    for rendition in renditions:
        assert _decoded_s(api, rendition.storage_key) == pytest.approx(4.0, abs=0.1)


def test_a_video_below_the_ladder_gets_one_rung_at_its_own_size(api: Api, tmp_path: Path) -> None:
    job = _ingest(api, _video(tmp_path / "small.mp4", "100x56", "yuv420p"))
    assert job.status.value == "succeeded", job.error
    with api.rt.db.session() as s:
        renditions = repo.list_renditions(s, job.asset_id)
        packages = repo.list_packages(s, job.asset_id)
    [rendition] = renditions
    assert rendition.spec.height == 56 and rendition.status.value == "ready"
    with api.rt.store.local_path(rendition.storage_key) as path, av.open(str(path)) as c:
        video = c.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (100, 56)
        frames = sum(1 for _ in c.decode(video))
    assert frames == pytest.approx(50, abs=2)
    [package] = packages
    assert package.status.value == "ready"


def test_a_1x1_video_fails_with_a_named_error(api: Api, tmp_path: Path) -> None:
    job = _ingest(api, _video(tmp_path / "tiny.mp4", "1x1", "yuv444p"))
    assert job.status.value == "failed"
    assert job.error is not None and job.error.name == "UnsupportedMediaError"
    assert "1x1 px video is too small to encode" in job.error.message
