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


# ---- several tracks --------------------------------------------------------------------------

TONES_HZ = (220, 330, 440, 550, 660)


def _five_tracks(path: Path, tones_hz: tuple[int, ...], default: int | None = None) -> Path:
    """A Matroska file of five FLAC audio tracks, one tone each; `default`: the only
    track flagged default (else ffmpeg flags the first)."""
    inputs = [a for f in tones_hz for a in ("-f", "lavfi", "-i", f"sine=f={f}:d=2")]
    maps = [a for i in range(len(tones_hz)) for a in ("-map", str(i))]
    flags: list[str] = []
    if default is not None:
        flags = [a for i in range(len(tones_hz)) for a in (f"-disposition:a:{i}", "0")]
        flags += [f"-disposition:a:{default}", "default"]
    _ffmpeg(*inputs, *maps, "-c:a", "flac", *flags, str(path))
    return path


def _tone_hz(api: Api, key: str) -> float:
    """The strongest frequency of a stored rendition's audio."""
    import numpy as np

    with api.rt.store.local_path(key) as path, av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    mono = np.concatenate(frames)[: rate * 2]
    spectrum = np.abs(np.fft.rfft(mono))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(mono)


def _ingest_tracks(api: Api, path: Path, tracks: dict | None) -> object:
    key = f"inbox/{path.name}"
    with path.open("rb") as f:
        api.rt.store.put(key, f)
    body: dict = {"source": {"key": key}, "package": False}
    if tracks is not None:
        body["tracks"] = tracks
    r = api.client.post("/v0/jobs", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    return wait_job(api.rt, r.json()["id"], timeout_s=JOB_TIMEOUT_S)


def _asset_and_renditions(api: Api, asset_id: str) -> tuple[dict, list]:
    with api.rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, asset_id)).to_json_dict()
        return asset, repo.list_renditions(s, asset_id)


@pytest.mark.parametrize(
    ("default", "asked", "index", "reason"),
    [
        (None, None, 0, "the first track flagged default"),
        (2, None, 2, "the first track flagged default"),
        (None, 3, 3, "asked for by the job"),
    ],
)
def test_a_file_with_five_audio_tracks_records_and_uses_its_choice(
    api: Api, tmp_path: Path, default: int | None, asked: int | None, index: int, reason: str
) -> None:
    """The asset says which track it was made from and why; every rendition is of that
    track (its tone is measured), chosen by default flag or by the job."""
    path = _five_tracks(tmp_path / f"five-{default}-{asked}.mkv", TONES_HZ, default)
    job = _ingest_tracks(api, path, None if asked is None else {"audio": asked})
    assert job.status.value == "succeeded", job.error
    asset, renditions = _asset_and_renditions(api, job.asset_id)
    assert asset["tracks"]["audio"] == {
        "index": index, "count": 5, "reason": reason, "language": None
    }  # fmt: skip
    assert renditions
    for rendition in renditions:
        assert _tone_hz(api, rendition.storage_key) == pytest.approx(TONES_HZ[index], abs=3)


def test_a_track_the_file_lacks_fails_the_job_and_leaves_the_asset_usable(
    api: Api, tmp_path: Path
) -> None:
    path = _five_tracks(tmp_path / "five-missing.mkv", (230, 340, 450, 560, 670))
    job = _ingest_tracks(api, path, {"audio": 7})
    assert job.status.value == "failed"
    assert job.error is not None and job.error.name == "InvalidRequestError"
    assert "audio track 7 was asked for; the file has 5" in job.error.message
    again = _ingest_tracks(api, path, {"audio": 1})  # the bytes are not condemned
    assert again.status.value == "succeeded", again.error
    asset, _ = _asset_and_renditions(api, again.asset_id)
    assert asset["tracks"]["audio"]["index"] == 1
    other = _ingest_tracks(api, path, {"audio": 2})  # same bytes, another choice
    assert other.status.value == "failed" and other.error.name == "ConflictError"
    assert "made from audio track 1" in other.error.message


def test_a_file_with_one_track_records_it(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "one.ogg"
    path.write_bytes(_vorbis(tmp_path / "one-src.ogg", 44100, 440))
    job = _ingest(api, path)
    assert job.status.value == "succeeded", job.error
    asset, _ = _asset_and_renditions(api, job.asset_id)
    assert asset["tracks"] == {
        "audio": {"index": 0, "count": 1, "reason": "the only audio track", "language": None},
        "video": None,
    }


def test_the_video_track_is_chosen_the_same_way(api: Api, tmp_path: Path) -> None:
    """Two video tracks (320x240, 160x120) and one audio: by default the first is
    used; asked for, the second, and its rendition is made from it (160x120)."""
    path = tmp_path / "two-videos.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=red:s=320x240:d=2:r=25",
        "-f", "lavfi", "-i", "color=c=blue:s=160x120:d=2:r=25",
        "-f", "lavfi", "-i", "sine=d=2",
        "-map", "0", "-map", "1", "-map", "2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    job = _ingest_tracks(api, path, {"video": 1})
    assert job.status.value == "succeeded", job.error
    asset, renditions = _asset_and_renditions(api, job.asset_id)
    assert asset["tracks"]["video"]["index"] == 1
    assert asset["tracks"]["video"]["count"] == 2
    assert (asset["video"]["width"], asset["video"]["height"]) == (160, 120)
    [rendition] = [r for r in renditions if r.spec.height is not None]
    with api.rt.store.local_path(rendition.storage_key) as made, av.open(str(made)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)


def test_a_track_of_a_kind_the_asset_lacks_is_a_conflict_for_the_same_bytes(
    api: Api, tmp_path: Path
) -> None:
    """Same bytes again, asking for a video track an audio-only asset never had: the
    job fails naming why instead of "succeeding" with renditions of something else."""
    path = tmp_path / "audio-only.ogg"
    path.write_bytes(_vorbis(tmp_path / "src.ogg", 44100, 330))
    first = _ingest_tracks(api, path, None)
    assert first.status.value == "succeeded", first.error
    again = _ingest_tracks(api, path, {"video": 0})
    assert again.status.value == "failed" and again.error.name == "ConflictError"
    assert "has no video track" in again.error.message
