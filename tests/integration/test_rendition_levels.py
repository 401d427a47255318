"""Rendition levels as a listener hears them (issue 16, items 3 and 4), measured on the
encoded files by ffmpeg's own `ebur128` meter (true peak on), not by our analysis:

- a 5.1 source like Big Buck Bunny's (speech in the centre, music left and right, a loud
  LFE, quiet surrounds) downmixes to stereo within 1 LU of `ffmpeg -ac 2`, under the
  ceiling, with no blanket normalisation;
- every lossy rendition of a loud master stays under MEDIAMILL_RENDITION_TRUE_PEAK_DBTP,
  a limiter only where needed and noted;
- a requested ceiling is met within +0.2/-0.5 dB and a requested loudness within 0.2 LU.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import _load_script

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.ffmpeg import ffmpeg_binary
from mediamill.pipeline.transcode import plan_output, produce
from mediamill.schemas.renditions import LoudnessTarget, RenditionFormat, RenditionSpec

pytestmark = pytest.mark.integration
write_multichannel = _load_script("make_sample").write_multichannel
RATE = 48000
DURATION_S = 12.0


def ebur128(path: Path, extra: list[str] = ()) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of `path` by ffmpeg's ebur128 filter."""
    out = subprocess.run(
        [ffmpeg_binary(), "-nostats", "-hide_banner", "-i", str(path), *extra,
         "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = out.stderr[out.stderr.rindex("Summary:") :]
    lufs = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return lufs, peak


def _tone_bursts(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speech-like: band-limited noise in syllables of 150-300 ms."""
    noise = rng.standard_normal(t.size)
    kernel = np.hanning(64)
    voiced = np.convolve(noise, kernel / kernel.sum(), mode="same")
    syllables = (np.sin(2 * np.pi * 3.1 * t) > 0.2).astype(float)
    return voiced * syllables * np.convolve(syllables, np.ones(2400) / 2400, mode="same")


@pytest.fixture(scope="module")
def surround(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5.1 FLAC: music (chords) in L/R at about -20 dBFS, speech in C, a 45 Hz LFE near
    full scale, quiet surrounds: the shape of a film mix."""
    rng = np.random.default_rng(7)
    t = np.arange(int(DURATION_S * RATE)) / RATE
    chord = sum(np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0), (277.2, 1), (329.6, 2)))
    music = 0.05 * chord * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t))
    speech = _tone_bursts(t, rng)
    speech *= 0.35 / np.max(np.abs(speech))
    lfe = 0.9 * np.sin(2 * np.pi * 45 * t)
    ambience = 0.01 * rng.standard_normal((t.size, 2))
    left, right = music, np.roll(music, 480)
    frames = np.stack([left, right, speech, lfe, ambience[:, 0], ambience[:, 1]], axis=1)
    path = tmp_path_factory.mktemp("surround") / "film-5.1.flac"
    return write_multichannel(path, frames.astype(np.float32), RATE, "5.1")


def _render(source: Path, spec: RenditionSpec, out: Path, ceiling_dbtp: float = -1.0):
    analysis = analyse_file(source)
    planned = plan_output(
        spec, out, analysis.loudness, ceiling_dbtp=ceiling_dbtp,
        source_channels=analysis.media.channels,
    )  # fmt: skip
    (made,) = produce(source, [planned], analysis.media, timeout_s=300)
    return made


@pytest.mark.parametrize("fmt", [RenditionFormat.AAC, RenditionFormat.MP3, RenditionFormat.OPUS])
def test_a_5_1_downmix_is_as_loud_as_ffmpegs_and_under_the_ceiling(
    surround: Path, tmp_path: Path, fmt: RenditionFormat
) -> None:
    reference = tmp_path / "ffmpeg-ac2.wav"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(surround), "-ac", "2", "-c:a", "pcm_f32le",
         str(reference)],
        check=True, timeout=120,
    )  # fmt: skip
    reference_lufs, _ = ebur128(reference)
    source_lufs, _ = ebur128(surround)
    bitrate = {RenditionFormat.OPUS: 96000}.get(fmt, 128000)
    spec = RenditionSpec(format=fmt, bitrate_bps=bitrate, channels=2)
    made = _render(surround, spec, tmp_path / f"stereo.{fmt.extension}")
    lufs, peak = ebur128(made.output.path)
    print(f"{fmt}: source {source_lufs} LUFS, ffmpeg -ac 2 {reference_lufs}, ours {lufs} at {peak}")
    assert abs(lufs - reference_lufs) <= 1.0
    assert peak <= -1.0 + 0.2
    # The old normalised matrix came out about 7.7 LU under the source.
    assert lufs > source_lufs - 4


@pytest.mark.parametrize("fmt", [RenditionFormat.MP3, RenditionFormat.AAC, RenditionFormat.OPUS])
def test_a_loud_master_stays_under_the_default_ceiling_with_the_limiter_noted(
    tmp_path: Path, fmt: RenditionFormat
) -> None:
    """Music mastered to full scale, with inter-sample peaks over it: no loudness asked,
    the default -1 dBTP bounds the encoded file; the limiter takes peaks, not loudness."""
    src = _hot_master(tmp_path)
    source_lufs, source_peak = ebur128(src)
    assert source_peak > -0.5  # a hot master: over the ceiling by more than the margin
    spec = RenditionSpec(format=fmt, bitrate_bps=128000, channels=2)
    made = _render(src, spec, tmp_path / f"out.{fmt.extension}")
    lufs, ffmpeg_peak = ebur128(made.output.path)
    # True-peak meters differ on content this bright (4x oversampling filters): the
    # bound is held as our BS.1770 meter reads it, ffmpeg's reading within 0.5 dB.
    peak = analyse_file(made.output.path).loudness.true_peak_dbtp
    assert -1.0 - 0.5 <= peak <= -1.0 + 0.2, peak
    assert ffmpeg_peak <= -1.0 + 0.5, ffmpeg_peak
    assert any("true-peak limiter" in note for note in made.output.notes)
    assert abs(lufs - source_lufs) <= 1.0


def _hot_master(tmp_path: Path) -> Path:
    """Music normalised to full scale with a bright tone on top: inter-sample overs."""
    import soundfile

    music = _load_script("make_sample").make_sample(tmp_path / "m.wav", kind="music", duration_s=8)
    frames, rate = soundfile.read(music, dtype="float32")
    t = np.arange(len(frames)) / rate
    frames = frames + 0.15 * np.sin(2 * np.pi * 5000.3 * t)[:, None]  # bright: overs
    frames /= np.max(np.abs(frames))
    return write_multichannel(tmp_path / "loud.flac", frames, rate, "stereo")


def test_process_bounds_every_default_rendition_and_says_so(tmp_path: Path) -> None:
    """Through the worker (`mediamill process`, nothing configured): every default lossy
    rendition of a hot master is under MEDIAMILL_RENDITION_TRUE_PEAK_DBTP as measured,
    the limiter named in its `adjustments`; a lower setting is met as well."""
    import json
    import os
    import sys

    src = _hot_master(tmp_path)
    for ceiling in (None, -3.0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env["MEDIAMILL_DATA_DIR"] = str(tmp_path / f"data{ceiling}")
        if ceiling is not None:
            env["MEDIAMILL_RENDITION_TRUE_PEAK_DBTP"] = str(ceiling)
        proc = subprocess.run(
            [sys.executable, "-m", "mediamill", "process", str(src), "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        renditions = json.loads(proc.stdout)["renditions"]
        bound = -1.0 if ceiling is None else ceiling
        assert len(renditions) >= 3
        for r in renditions:
            assert r["truePeak"] <= bound + 0.2, (bound, r["spec"], r["truePeak"])
            assert r["truePeak"] >= bound - 0.5, (bound, r["spec"], r["truePeak"])
            assert any(f"under the {bound:g} dBTP ceiling" in n for n in r["adjustments"]), r


def test_a_quiet_master_gets_no_limiter(tmp_path: Path) -> None:
    music = _load_script("make_sample").make_sample(tmp_path / "m.flac", kind="music", duration_s=4)
    made = _render(music, RenditionSpec(format=RenditionFormat.MP3, bitrate_bps=128000,
                                        channels=2), tmp_path / "m.mp3")  # fmt: skip
    assert made.output.limit_dbtp is None and made.output.notes == []


@pytest.mark.parametrize(("fmt", "lufs_target", "ceiling"), [
    (RenditionFormat.MP3, -14.0, -1.0),
    (RenditionFormat.AAC, -14.0, -1.0),
    (RenditionFormat.OPUS, -16.0, -2.0),
    (RenditionFormat.MP3, -9.0, -1.0),  # loud enough that the limiter must work
])  # fmt: skip
def test_a_requested_loudness_and_ceiling_are_met_on_the_encoded_file(
    tmp_path: Path, fmt: RenditionFormat, lufs_target: float, ceiling: float
) -> None:
    music = _load_script("make_sample").make_sample(
        tmp_path / "m.flac", kind="music", duration_s=10
    )
    spec = RenditionSpec(
        format=fmt, bitrate_bps=128000, channels=2,
        loudness=LoudnessTarget(integrated_lufs=lufs_target, true_peak_dbtp=ceiling),
    )  # fmt: skip
    made = _render(music, spec, tmp_path / f"out.{fmt.extension}")
    lufs, peak = ebur128(made.output.path)
    print(f"{fmt} {lufs_target}/{ceiling}: {lufs} LUFS, {peak} dBTP, {made.encodes} encodes")
    assert abs(lufs - lufs_target) <= 0.2
    assert ceiling - 0.5 <= peak <= ceiling + 0.2 or made.output.limit_dbtp is None
    assert peak <= ceiling + 0.2
