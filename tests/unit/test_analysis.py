"""The analysis stage on generated media: stream facts, loudness against pyloudnorm,
named errors for bad input, and memory that does not grow with duration."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from media_corpus import make_bad_inputs
from support import make_sample

from mediamill.pipeline.analysis import analyse_file
from mediamill.schemas.errors import CorruptMediaError, UnsupportedMediaError

EXPECTED = {
    # name: (container, codec, channels, sample rate, duration s, mime)
    "music.flac": ("flac", "flac", 2, 48000, 6.0, "audio/flac"),
    "music44.flac": ("flac", "flac", 2, 44100, 4.0, "audio/flac"),
    "speech.wav": ("wav", "pcm_s16le", 2, 48000, 5.0, "audio/wav"),
    "music.mp3": ("mp3", "mp3", 2, 48000, 5.0, "audio/mpeg"),
    "music.ogg": ("ogg", "vorbis", 2, 48000, 3.0, "audio/ogg"),
    "music.opus": ("ogg", "opus", 2, 48000, 3.0, "audio/ogg"),
    "music.m4a": ("mp4", "aac", 2, 48000, 3.0, "audio/mp4"),
    "mono.flac": ("flac", "flac", 1, 48000, 3.0, "audio/flac"),
    "surround.flac": ("flac", "flac", 6, 48000, 4.0, "audio/flac"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stream_facts(samples: dict[str, Path], name: str) -> None:
    container, codec, channels, rate, duration_s, mime = EXPECTED[name]
    result = analyse_file(samples[name])
    m = result.media
    assert (m.container, m.codec, m.channels, m.sample_rate_hz, m.asset_type) == (
        container,
        codec,
        channels,
        rate,
        mime,
    )
    # Lossy encoders pad to whole frames; ffmpeg trims what the stream declares.
    assert abs(m.duration_ms - duration_s * 1000) <= 60, m.duration_ms
    assert m.bitrate_bps and m.bitrate_bps > 0
    assert m.video is None
    assert result.loudness.integrated_lufs is not None


def test_surround_layout_and_weights(samples: dict[str, Path]) -> None:
    """5.1 has six channels; surrounds weigh 1.41 and the LFE is left out (BS.1770-4)."""
    result = analyse_file(samples["surround.flac"])
    assert result.media.channel_layout == "5.1" and result.media.channels == 6
    data, rate = soundfile.read(samples["surround.flac"], always_2d=True)
    assert np.abs(data[:, 3]).max() > 0.05, "the sample's LFE must carry signal"
    # pyloudnorm weights five channels L, R, C, Ls, Rs: give it everything but the LFE.
    five = data[:, [0, 1, 2, 4, 5]]
    reference = pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(five)
    assert result.loudness.integrated_lufs == pytest.approx(reference, abs=0.05)


def test_video_facts_without_decoding_frames(samples: dict[str, Path]) -> None:
    result = analyse_file(samples["video.mp4"])
    m = result.media
    assert m.container == "mp4" and m.asset_type == "video/mp4"
    assert m.codec == "aac" and m.channels == 2
    assert m.video is not None
    assert (m.video.codec, m.video.width, m.video.height) == ("h264", 1280, 720)
    assert m.video.frame_rate == pytest.approx(30.0)
    assert abs(m.duration_ms - 2000) <= 60


@pytest.mark.parametrize("name", ["music.flac", "music44.flac", "speech.wav", "mono.flac"])
def test_loudness_matches_pyloudnorm_on_the_decoded_file(
    samples: dict[str, Path], name: str
) -> None:
    data, rate = soundfile.read(samples[name], always_2d=True)
    reference = pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(data)
    got = analyse_file(samples[name]).loudness
    assert got.integrated_lufs == pytest.approx(reference, abs=0.05)
    assert got.sample_peak_dbfs == pytest.approx(20 * np.log10(np.abs(data).max()), abs=0.01)
    assert got.true_peak_dbtp >= got.sample_peak_dbfs - 1e-6
    assert got.max_momentary_lufs >= got.integrated_lufs - 1.0


def test_short_input_gives_null_loudness_not_a_crash(samples: dict[str, Path]) -> None:
    result = analyse_file(samples["short.wav"])
    assert abs(result.media.duration_ms - 300) <= 1
    assert result.loudness.integrated_lufs is None
    assert result.loudness.loudness_range_lu is None


def test_silence_gives_null_loudness(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros((48000 * 3, 2), dtype=np.float32), 48000, subtype="PCM_16")
    loud = analyse_file(path).loudness
    assert loud.integrated_lufs is None and loud.true_peak_dbtp is None
    assert loud.loudness_range_lu is None


def test_progress_is_reported_up_to_one(tmp_path: Path) -> None:
    path = make_sample(tmp_path / "long.flac", kind="music", duration_s=120)
    seen: list[float] = []
    analyse_file(path, on_progress=seen.append)
    assert seen[-1] == 1.0
    assert seen == sorted(seen)


def test_bad_inputs_raise_named_errors(samples: dict[str, Path], tmp_path: Path) -> None:
    errors = {
        "CorruptMediaError": CorruptMediaError,
        "UnsupportedMediaError": UnsupportedMediaError,
    }
    for name, (path, error_name) in make_bad_inputs(
        tmp_path, samples["music.flac"], samples["music.mp3"]
    ).items():
        with pytest.raises(errors[error_name]) as caught:
            analyse_file(path)
        assert caught.value.message, name


def test_memory_does_not_grow_with_duration(tmp_path: Path) -> None:
    """Python-side peak allocations for 30 s and 300 s of audio are the same size."""
    peaks = []
    for seconds in (30, 300):
        path = make_sample(tmp_path / f"m{seconds}.flac", kind="sine", duration_s=seconds)
        tracemalloc.start()
        analyse_file(path)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] + 1_000_000, peaks
