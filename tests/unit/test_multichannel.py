"""Audio of every channel count, named and unnamed layouts: analysed, weighted by
layout (BS.1770-4), downmixed, and never converted the way that crashes PyAV."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
from support import _load_script

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.loudness import channel_weights
from mediamill.pipeline.transcode import Output, produce
from mediamill.schemas.renditions import RenditionSpec

write_multichannel = _load_script("make_sample").write_multichannel

RATE_HZ = 48000


def _programme(seconds: float, seed: int = 0) -> np.ndarray:
    """A tonal programme with some noise: loud enough to pass the gates, and kept
    close by lossy codecs (unlike white noise)."""
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    rng = np.random.default_rng(seed)
    x = sum(0.08 * np.sin(2 * np.pi * f * t + seed) for f in (220.0, 330.0, 554.0, 1250.0))
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _in_channels(channels: int, signal_at: dict[int, np.ndarray]) -> np.ndarray:
    frames = next(iter(signal_at.values())).size
    out = np.zeros((frames, channels), dtype=np.float32)
    for index, signal in signal_at.items():
        out[:, index] = signal
    return out


@pytest.fixture(scope="module")
def stereo_lufs(tmp_path_factory: pytest.TempPathFactory) -> float:
    d = tmp_path_factory.mktemp("stereo")
    left, right = _programme(3.0, 1), _programme(3.0, 2)
    path = write_multichannel(d / "stereo.wav", _in_channels(2, {0: left, 1: right}), RATE_HZ)
    return analyse_file(path).loudness.integrated_lufs


def test_every_channel_count_from_1_to_64(tmp_path: Path) -> None:
    """The same signal in every channel of an unnamed layout: every channel weighs
    1.0, so the loudness rises by 10 log10(channels) over the mono file's."""
    signal = _programme(0.8)
    mono = analyse_file(write_multichannel(tmp_path / "1.wav", signal[:, None], RATE_HZ))
    for channels in range(2, 65):
        path = write_multichannel(
            tmp_path / f"{channels}.wav", np.repeat(signal[:, None], channels, axis=1), RATE_HZ
        )
        result = analyse_file(path)
        assert result.media.channels == channels
        assert result.media.channel_layout == f"{channels} channels"
        expected = mono.loudness.integrated_lufs + 10 * math.log10(channels)
        assert result.loudness.integrated_lufs == pytest.approx(expected, abs=0.01), channels
        path.unlink()


@pytest.mark.parametrize(
    ("layout", "ext"),
    [("7.1", ".wav"), ("7.1", ".flac"), ("7.1.4", ".wav"), ("hexadecagonal", ".wav"),
     ("22.2", ".wav")],
)
def test_signal_only_in_left_and_right_measures_as_stereo(
    tmp_path: Path, stereo_lufs: float, layout: str, ext: str
) -> None:
    channels = av.AudioLayout(layout).nb_channels
    data = _in_channels(channels, {0: _programme(3.0, 1), 1: _programme(3.0, 2)})
    result = analyse_file(write_multichannel(tmp_path / f"x{ext}", data, RATE_HZ, layout))
    assert result.media.channels == channels
    assert result.loudness.integrated_lufs == pytest.approx(stereo_lufs, abs=0.1)


@pytest.mark.parametrize(
    ("layout", "ext"), [("7.1", ".opus"), ("7.1", ".m4a"), (None, ".opus")]
)
def test_lossy_multichannel_measures_close_to_stereo(
    tmp_path: Path, stereo_lufs: float, layout: str | None, ext: str
) -> None:
    """Opus (mapping family 255: unnamed channels) and AAC 7.1: the same programme in
    L and R, the other channels silent; a lossy encode moves loudness a little."""
    data = _in_channels(8, {0: _programme(3.0, 1), 1: _programme(3.0, 2)})
    result = analyse_file(write_multichannel(tmp_path / f"x{ext}", data, RATE_HZ, layout))
    assert result.media.channels == 8
    assert result.loudness.integrated_lufs == pytest.approx(stereo_lufs, abs=0.5)


def test_lfe_of_7_1_4_is_excluded(tmp_path: Path, stereo_lufs: float) -> None:
    names = [c.name for c in av.AudioLayout("7.1.4").channels]
    lfe = names.index("LFE")
    weights = channel_weights(names)
    assert weights[lfe] == 0.0
    assert list(weights[names.index("SL") : names.index("SR") + 1]) == [1.41, 1.41]
    assert weights[names.index("TFL")] == 1.0  # height channels: 1.0
    loud_bass = 0.9 * np.sin(2 * np.pi * 60 * np.arange(3 * RATE_HZ) / RATE_HZ)
    data = _in_channels(
        12, {0: _programme(3.0, 1), 1: _programme(3.0, 2), lfe: loud_bass.astype(np.float32)}
    )
    result = analyse_file(write_multichannel(tmp_path / "x.wav", data, RATE_HZ, "7.1.4"))
    assert result.media.channel_layout == "7.1.4"
    assert result.loudness.integrated_lufs == pytest.approx(stereo_lufs, abs=0.1)
    only_lfe = _in_channels(12, {lfe: loud_bass.astype(np.float32)})
    silent = analyse_file(write_multichannel(tmp_path / "lfe.wav", only_lfe, RATE_HZ, "7.1.4"))
    assert silent.loudness.integrated_lufs is None  # nothing weighed: below the gate
    assert silent.loudness.true_peak_dbtp is not None  # the peak still sees the LFE


@pytest.mark.parametrize("channels", [8, 12, 24, 64])
def test_unnamed_layouts_downmix_every_channel(tmp_path: Path, channels: int) -> None:
    """No channel of an unnamed layout is dropped as a guessed LFE: each downmix is
    the mean of its channels, so a signal in channel 3 only reaches both outputs'
    left side (and mono) at 1/n of its level (n = channels averaged)."""
    signal = _programme(2.0)
    source = write_multichannel(tmp_path / "src.wav", _in_channels(channels, {3: signal}), RATE_HZ)
    media = analyse_file(source).media
    outputs = [
        Output(RenditionSpec(format="wav", channels=2), tmp_path / "stereo.wav"),
        Output(RenditionSpec(format="wav", channels=1), tmp_path / "mono.wav"),
    ]
    stereo, mono = produce(source, outputs, media, timeout_s=120)
    assert stereo.measured.media.channels == 2 and mono.measured.media.channels == 1
    with av.open(str(stereo.output.path)) as c:
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    pcm = pcm.reshape(-1, 2).astype(np.float64) / 32768  # packed s16, interleaved L R
    rms = np.sqrt((pcm**2).mean(axis=0))
    expected = np.sqrt((signal.astype(np.float64) ** 2).mean()) / (channels / 2)
    # Channel 3 is odd: the right side.
    assert rms[1] == pytest.approx(expected, rel=0.02)
    assert rms[0] < expected / 100


def _run_snippet(code: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("layout", "channels"), [("7.1", 8), ("7.1.4", 12), (None, 16)])
def test_analysis_survives_planar_frames_of_8_or_more_channels(
    tmp_path: Path, layout: str | None, channels: int
) -> None:
    """Regression test for the PyAV planes bug (see `analysis.packed_samples`): the
    analysis runs in a child process, so if it converted planar frames the old way
    the child would die with SIGSEGV and this test fail, not the suite."""
    path = write_multichannel(
        tmp_path / "x.wav", np.repeat(_programme(1.0)[:, None], channels, axis=1), RATE_HZ,
        layout,
    )
    proc = _run_snippet(
        """
        import sys
        from mediamill.pipeline.analysis import analyse_file
        print(analyse_file(sys.argv[1]).media.channels)
        """,
        path,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == [str(channels)]


def test_pyav_still_miscounts_planes_of_8_channel_frames(tmp_path: Path) -> None:
    """The bug the workaround is for, still present in the PyAV installed: a planar
    frame of 8 channels reports 9 planes (or the process dies reading them). When this
    fails, PyAV counts right: lift the `av` bound in pyproject.toml and let this go."""
    path = write_multichannel(
        tmp_path / "x.wav", np.repeat(_programme(0.5)[:, None], 8, axis=1), RATE_HZ, "7.1"
    )
    proc = _run_snippet(
        """
        import sys, av
        with av.open(sys.argv[1]) as c:
            s = c.streams.audio[0]
            r = av.AudioResampler(format="fltp", layout=s.layout, rate=s.sample_rate)
            frame = next(o for f in c.decode(s) for o in r.resample(f))
            print(len(frame.planes), flush=True)
        """,
        path,
    )
    crashed = proc.returncode < 0
    assert crashed or proc.stdout.split() != ["8"], "PyAV now counts 8 planes: lift the bound"
