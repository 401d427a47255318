"""EBU conformance cases for `LoudnessMeter`, synthesised with numpy at 44.1 and 48 kHz.

EBU Tech 3341 (v4, 2016), Table 1 "minimum requirements" (levels are the sine's peak
level in dBFS, i.e. amplitude 10**(dBFS/20); stereo means the same signal in L and R):
  case 1   stereo 1 kHz, -23 dBFS 20 s                                  I = -23.0 ±0.1 LUFS
  case 2   stereo 1 kHz, -33 dBFS 20 s                                  I = -33.0 ±0.1 LUFS
  case 3   stereo 1 kHz, -36 dBFS 10 s, -23 dBFS 60 s, -36 dBFS 10 s     I = -23.0 ±0.1 LUFS
  case 4   stereo 1 kHz, -72 10 s, -36 10 s, -23 60 s, -36 10 s, -72 10 s I = -23.0 ±0.1 LUFS
  case 5   stereo 1 kHz, -26 dBFS 20 s, -20 dBFS 20.1 s, -26 dBFS 20 s    I = -23.0 ±0.1 LUFS
  case 6   5.0 (L, R, C, Ls, Rs) 1 kHz, -28, -28, -24, -30, -30 dBFS 20 s I = -23.0 ±0.1 LUFS
  case 15  stereo sine fs/4, 0.50 FS, phase 0°                 max true peak -6.0 +0.2/-0.4 dBTP
  case 16  stereo sine fs/4, 0.50 FS, phase 45°                max true peak -6.0 +0.2/-0.4 dBTP
  case 17  stereo sine fs/6, 0.50 FS, phase 60°                max true peak -6.0 +0.2/-0.4 dBTP
  case 18  stereo sine fs/8, 0.50 FS, phase 67.5°              max true peak -6.0 +0.2/-0.4 dBTP
  case 19  stereo sine fs/4, 1.41 FS, phase 45°                max true peak +3.0 +0.2/-0.4 dBTP
EBU Tech 3342 (loudness range), Table 1, stereo 1 kHz sine, 20 s per level:
  case 1   -20, -30 dBFS                  LRA 10 ±1 LU
  case 2   -20, -15 dBFS                  LRA  5 ±1 LU
  case 3   -40, -20 dBFS                  LRA 20 ±1 LU
  case 4   -50, -35, -20, -35, -50 dBFS   LRA 15 ±1 LU
"""

from __future__ import annotations

import numpy as np
import pytest

from mediamill.pipeline.loudness import LoudnessMeter, channel_weights
from mediamill.schemas.media import LoudnessStats

RATES_HZ = (44100, 48000)
# Deliberately not a multiple of 100 ms or of any internal block, to exercise carry-over.
CHUNK_SAMPLES = 33_333


def _tone(rate_hz: int, segments: list[tuple[float, float]], freq_hz: float = 1000.0) -> np.ndarray:
    """A continuous-phase sine whose peak level steps through (dBFS, duration_s) segments."""
    lengths = [round(duration_s * rate_hz) for _, duration_s in segments]
    amplitude = np.repeat([10.0 ** (level / 20.0) for level, _ in segments], lengths)
    n = np.arange(amplitude.size)
    return amplitude * np.sin(2.0 * np.pi * freq_hz * n / rate_hz)


def _run(rate_hz: int, samples: np.ndarray, weights: np.ndarray) -> LoudnessStats:
    """Feed float32 samples (channels, n) in odd-sized chunks; return the result."""
    meter = LoudnessMeter(rate_hz, weights)
    data = samples.astype(np.float32)
    for start in range(0, data.shape[1], CHUNK_SAMPLES):
        meter.add(data[:, start : start + CHUNK_SAMPLES])
    return meter.result()


STEREO = channel_weights(["FL", "FR"])

TECH_3341_INTEGRATED = [
    pytest.param([(-23.0, 20.0)], -23.0, id="case1"),
    pytest.param([(-33.0, 20.0)], -33.0, id="case2"),
    pytest.param([(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)], -23.0, id="case3"),
    pytest.param(
        [(-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0)],
        -23.0,
        id="case4",
    ),
    pytest.param([(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)], -23.0, id="case5"),
]


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize(("segments", "expected_lufs"), TECH_3341_INTEGRATED)
def test_tech3341_integrated_stereo(
    rate_hz: int, segments: list[tuple[float, float]], expected_lufs: float
) -> None:
    tone = _tone(rate_hz, segments)
    stats = _run(rate_hz, np.stack([tone, tone]), STEREO)
    assert stats.integrated_lufs == pytest.approx(expected_lufs, abs=0.1)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_tech3341_case6_five_channels(rate_hz: int) -> None:
    levels_dbfs = (-28.0, -28.0, -24.0, -30.0, -30.0)  # L, R, C, Ls, Rs
    samples = np.stack([_tone(rate_hz, [(level, 20.0)]) for level in levels_dbfs])
    weights = channel_weights(["FL", "FR", "FC", "BL", "BR"])
    stats = _run(rate_hz, samples, weights)
    assert stats.integrated_lufs == pytest.approx(-23.0, abs=0.1)


TECH_3341_TRUE_PEAK = [
    pytest.param(1 / 4, 0.50, 0.0, -6.0, id="case15"),
    pytest.param(1 / 4, 0.50, 45.0, -6.0, id="case16"),
    pytest.param(1 / 6, 0.50, 60.0, -6.0, id="case17"),
    pytest.param(1 / 8, 0.50, 67.5, -6.0, id="case18"),
    pytest.param(1 / 4, 1.41, 45.0, 3.0, id="case19"),
]


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize(
    ("freq_per_fs", "amplitude", "phase_deg", "expected_dbtp"), TECH_3341_TRUE_PEAK
)
def test_tech3341_true_peak(
    rate_hz: int, freq_per_fs: float, amplitude: float, phase_deg: float, expected_dbtp: float
) -> None:
    n = np.arange(2 * rate_hz)
    sine = amplitude * np.sin(2.0 * np.pi * freq_per_fs * n + np.deg2rad(phase_deg))
    # 20 ms raised-cosine fades: an abrupt start or end rings in any band-limited
    # reconstruction (ffmpeg's ebur128 reads -5.4 dBTP for an unfaded case 16), and the
    # cases are about the steady tone.
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(round(0.02 * rate_hz)) / round(0.02 * rate_hz))
    sine[: fade.size] *= fade
    sine[-fade.size :] *= fade[::-1]
    stats = _run(rate_hz, np.stack([sine, sine]), STEREO)
    assert expected_dbtp - 0.4 <= stats.true_peak_dbtp <= expected_dbtp + 0.2
    assert stats.sample_peak_dbfs is not None
    assert stats.sample_peak_dbfs <= stats.true_peak_dbtp + 1e-9


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_tech3341_true_peak_is_not_the_sample_peak(rate_hz: int) -> None:
    """Case 16 would read -9.0 dB with a sample-peak meter: the inter-sample peak counts."""
    n = np.arange(rate_hz)
    sine = 0.5 * np.sin(2.0 * np.pi * n / 4 + np.pi / 4)
    fade = np.linspace(0.0, 1.0, 960)
    sine[: fade.size] *= fade
    sine[-fade.size :] *= fade[::-1]
    stats = _run(rate_hz, np.stack([sine, sine]), STEREO)
    assert stats.sample_peak_dbfs == pytest.approx(-9.03, abs=0.01)
    assert stats.true_peak_dbtp == pytest.approx(-6.02, abs=0.05)


TECH_3342_LRA = [
    pytest.param([-20.0, -30.0], 10.0, id="case1"),
    pytest.param([-20.0, -15.0], 5.0, id="case2"),
    pytest.param([-40.0, -20.0], 20.0, id="case3"),
    pytest.param([-50.0, -35.0, -20.0, -35.0, -50.0], 15.0, id="case4"),
]


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize(("levels_dbfs", "expected_lu"), TECH_3342_LRA)
def test_tech3342_loudness_range(
    rate_hz: int, levels_dbfs: list[float], expected_lu: float
) -> None:
    tone = _tone(rate_hz, [(level, 20.0) for level in levels_dbfs])
    stats = _run(rate_hz, np.stack([tone, tone]), STEREO)
    assert stats.loudness_range_lu == pytest.approx(expected_lu, abs=1.0)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_steady_tone_momentary_and_short_term_maxima(rate_hz: int) -> None:
    """Tech 3341 cases 1-2 also require M and S = I for a steady tone (±0.1)."""
    tone = _tone(rate_hz, [(-23.0, 20.0)])
    stats = _run(rate_hz, np.stack([tone, tone]), STEREO)
    assert stats.max_momentary_lufs == pytest.approx(-23.0, abs=0.1)
    assert stats.max_short_term_lufs == pytest.approx(-23.0, abs=0.1)
    assert stats.loudness_range_lu == pytest.approx(0.0, abs=0.1)
