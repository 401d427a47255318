"""`LoudnessMeter` against pyloudnorm (DeMan filters) on varied material, plus the
streaming contract: chunking invariance, null results, channel weights, bounded memory.

All signals are generated here with seeded numpy RNGs. Durations are whole multiples of
100 ms, because pyloudnorm rounds the number of 400 ms blocks and may count a partial
last block, which a streaming meter (rightly) does not.
"""

from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from mediamill.pipeline.loudness import LoudnessMeter, channel_weights
from mediamill.schemas.media import LoudnessStats

RATES_HZ = (44100, 48000)


# -- signals ---------------------------------------------------------------------------


def _white(rng: np.random.Generator, channels: int, n: int) -> np.ndarray:
    return 0.1 * rng.standard_normal((channels, n))


def _pink(rng: np.random.Generator, channels: int, n: int) -> np.ndarray:
    """1/f noise: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal((channels, n)), axis=1)
    freqs = np.arange(spectrum.shape[1], dtype=np.float64)
    freqs[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(freqs), n=n, axis=1)
    return 0.2 * pink / np.max(np.abs(pink))


def _music(rng: np.random.Generator, channels: int, n: int, rate_hz: int) -> np.ndarray:
    """Notes of a few harmonics, each with an attack/decay envelope, over a soft noise bed,
    with a slow crescendo and a quiet passage so that gating and LRA have work to do."""
    t = np.arange(n) / rate_hz
    note_s = 0.25
    notes = rng.choice([110.0, 146.8, 196.0, 220.0, 261.6, 329.6, 392.0, 440.0], size=n)
    note_index = (t // note_s).astype(np.int64)
    freqs_hz = notes[note_index]
    phase = 2.0 * np.pi * np.cumsum(freqs_hz) / rate_hz
    in_note_s = t - note_index * note_s
    envelope = np.minimum(in_note_s / 0.01, 1.0) * np.exp(-in_note_s * 6.0)
    voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * envelope
    dynamics = 0.3 + 0.7 * t / t[-1]
    dynamics[(t > 0.4 * t[-1]) & (t < 0.55 * t[-1])] *= 0.05
    out = np.empty((channels, n))
    for ch in range(channels):
        bed = 0.01 * rng.standard_normal(n)
        out[ch] = 0.25 * (0.6 + 0.4 * (ch % 2)) * voice * dynamics + bed
    return out


def _speech(rng: np.random.Generator, channels: int, n: int, rate_hz: int) -> np.ndarray:
    """Bursts of syllable-modulated, band-limited noise separated by silences."""
    out = np.zeros((channels, n))
    pos = int(0.2 * rate_hz)
    while pos < n:
        burst = int(rng.uniform(0.4, 1.5) * rate_hz)
        gap = int(rng.uniform(0.2, 1.2) * rate_hz)
        seg = slice(pos, min(pos + burst, n))
        length = seg.stop - seg.start
        t = np.arange(length) / rate_hz
        syllables = np.abs(np.sin(2.0 * np.pi * rng.uniform(3.0, 5.0) * t)) ** 1.5
        noise = rng.standard_normal(length)
        voiced = np.convolve(noise, np.ones(8) / 8.0, mode="same")  # crude low-pass
        level = 10.0 ** (rng.uniform(-30.0, -14.0) / 20.0)
        for ch in range(channels):
            out[ch, seg] = level * syllables * voiced * (1.0 if ch == 0 else 0.7)
        pos += burst + gap
    return out


def _signal(kind: str, channels: int, rate_hz: int, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(duration_s * rate_hz)
    if kind == "white":
        return _white(rng, channels, n)
    if kind == "pink":
        return _pink(rng, channels, n)
    if kind == "music":
        return _music(rng, channels, n, rate_hz)
    return _speech(rng, channels, n, rate_hz)


def _measure(
    rate_hz: int, samples: np.ndarray, weights: np.ndarray, chunk: int | None = 48_000
) -> LoudnessStats:
    meter = LoudnessMeter(rate_hz, weights)
    step = samples.shape[1] if chunk is None else chunk
    for start in range(0, samples.shape[1], step):
        meter.add(samples[:, start : start + step])
    return meter.result()


def _pyloudnorm_integrated(rate_hz: int, samples: np.ndarray) -> float:
    """pyloudnorm wants (n, channels) in the order L, R, C, Ls, Rs (or mono, (n,))."""
    meter = pyloudnorm.Meter(rate_hz, filter_class="DeMan")
    data = samples[0] if samples.shape[0] == 1 else samples.T
    return float(meter.integrated_loudness(np.ascontiguousarray(data)))


# -- agreement with pyloudnorm ---------------------------------------------------------

LAYOUTS = {"mono": ["FC"], "stereo": ["FL", "FR"], "5.1": ["FL", "FR", "FC", "LFE", "BL", "BR"]}


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("kind", ["white", "pink", "music", "speech"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_integrated_matches_pyloudnorm(rate_hz: int, kind: str, layout: str) -> None:
    names = LAYOUTS[layout]
    seed = sum(map(ord, kind + layout)) + rate_hz  # deterministic, distinct per case
    samples = _signal(kind, len(names), rate_hz, 12.0, seed)
    stats = _measure(rate_hz, samples.astype(np.float32), channel_weights(names))
    # pyloudnorm knows 5 channels (L, R, C, Ls, Rs): give it the 5.0 part of the 5.1.
    reference_input = samples.astype(np.float32).astype(np.float64)
    if layout == "5.1":
        reference_input = reference_input[[0, 1, 2, 4, 5]]
    expected = _pyloudnorm_integrated(rate_hz, reference_input)
    assert stats.integrated_lufs == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("rate_hz", [8000, 11025, 22050, 96000])
def test_integrated_matches_pyloudnorm_at_other_rates(rate_hz: int) -> None:
    """The K-weighting is derived per rate; 11025 Hz also has non-integer 100 ms blocks."""
    samples = _signal("music", 2, rate_hz, 8.0, seed=rate_hz)
    stats = _measure(rate_hz, samples, channel_weights(["FL", "FR"]), chunk=4096)
    expected = _pyloudnorm_integrated(rate_hz, samples)
    assert stats.integrated_lufs == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("kind", ["pink", "music", "speech"])
def test_true_peak_matches_an_independent_4x_oversampler(rate_hz: int, kind: str) -> None:
    """scipy's resample_poly (a longer, differently designed filter) as the reference.

    White noise is left out: its energy right up to Nyquist, where every practical
    interpolator differs (BS.1770 only asks for 4x), moves the peak by ~0.15 dB."""
    samples = _signal(kind, 2, rate_hz, 6.0, seed=20).astype(np.float32)
    stats = _measure(rate_hz, samples, channel_weights(["FL", "FR"]))
    upsampled = resample_poly(samples.astype(np.float64), 4, 1, axis=1)
    expected_dbtp = 20.0 * np.log10(np.max(np.abs(upsampled)))
    assert stats.true_peak_dbtp == pytest.approx(expected_dbtp, abs=0.1)
    assert stats.sample_peak_dbfs == pytest.approx(20.0 * np.log10(np.max(np.abs(samples))))


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_lfe_does_not_change_loudness(rate_hz: int) -> None:
    names = LAYOUTS["5.1"]
    samples = _signal("music", 6, rate_hz, 10.0, seed=51)
    loud_lfe = samples.copy()
    loud_lfe[3] = 0.9 * np.sin(2.0 * np.pi * 60.0 * np.arange(samples.shape[1]) / rate_hz)
    quiet, loud = (_measure(rate_hz, s, channel_weights(names)) for s in (samples, loud_lfe))
    assert quiet.integrated_lufs == loud.integrated_lufs
    assert quiet.max_momentary_lufs == loud.max_momentary_lufs
    assert quiet.max_short_term_lufs == loud.max_short_term_lufs
    assert quiet.loudness_range_lu == loud.loudness_range_lu
    # Peaks are per channel over all channels, the LFE included.
    assert loud.sample_peak_dbfs == pytest.approx(20 * np.log10(0.9), abs=1e-3)


# -- streaming contract ----------------------------------------------------------------


def _assert_same_stats(a: LoudnessStats, b: LoudnessStats, tol: float = 1e-6) -> None:
    for field, value in a.model_dump().items():
        other = getattr(b, field)
        if value is None or other is None:
            assert value is other, field
        else:
            assert other == pytest.approx(value, abs=tol), field


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_chunking_does_not_change_results(rate_hz: int) -> None:
    samples = np.concatenate(
        [
            _signal("music", 2, rate_hz, 6.0, seed=7),
            np.zeros((2, rate_hz)),
            _signal("speech", 2, rate_hz, 5.0, seed=8),
        ],
        axis=1,
    ).astype(np.float32)
    weights = channel_weights(["FL", "FR"])
    whole = _measure(rate_hz, samples, weights, chunk=None)
    assert whole.integrated_lufs is not None
    assert whole.loudness_range_lu is not None
    for chunk in (1000, 4096, 48_000):
        _assert_same_stats(whole, _measure(rate_hz, samples, weights, chunk=chunk))


def test_tiny_chunks_give_the_same_results() -> None:
    rate_hz = 48000
    samples = _signal("music", 2, rate_hz, 3.5, seed=12).astype(np.float32)
    weights = channel_weights(["FL", "FR"])
    whole = _measure(rate_hz, samples, weights, chunk=None)
    for chunk in (37, 1024):
        _assert_same_stats(whole, _measure(rate_hz, samples, weights, chunk=chunk))


def test_irregular_chunks_zero_length_adds_and_mid_stream_results() -> None:
    rate_hz = 48000
    samples = _signal("pink", 2, rate_hz, 8.0, seed=3).astype(np.float32)
    weights = channel_weights(["FL", "FR"])
    expected = _measure(rate_hz, samples, weights, chunk=None)
    meter = LoudnessMeter(rate_hz, weights)
    rng = np.random.default_rng(11)
    pos = 0
    while pos < samples.shape[1]:
        step = int(rng.integers(0, 20_000))
        meter.add(samples[:, pos : pos + step])
        if rng.random() < 0.2:
            meter.result()  # reading must not disturb the measurement
        pos += step
    meter.add(np.zeros((2, 0), dtype=np.float32))
    _assert_same_stats(expected, meter.result())


def test_result_midway_then_more_audio() -> None:
    rate_hz = 44100
    samples = _signal("music", 2, rate_hz, 8.0, seed=5)
    weights = channel_weights(["FL", "FR"])
    meter = LoudnessMeter(rate_hz, weights)
    meter.add(samples[:, : 3 * rate_hz])
    first = meter.result()
    meter.add(samples[:, 3 * rate_hz :])
    _assert_same_stats(_measure(rate_hz, samples, weights, chunk=None), meter.result())
    assert first.integrated_lufs is not None


def test_input_buffer_may_be_reused_by_the_caller() -> None:
    rate_hz = 48000
    samples = _signal("white", 2, rate_hz, 4.0, seed=9).astype(np.float32)
    weights = channel_weights(["FL", "FR"])
    meter = LoudnessMeter(rate_hz, weights)
    buf = np.empty((2, 12_000), dtype=np.float32)
    for start in range(0, samples.shape[1], buf.shape[1]):
        buf[:] = samples[:, start : start + buf.shape[1]]
        meter.add(buf)
        buf[:] = 1e3  # garbage after the call must not leak into the measurement
    _assert_same_stats(_measure(rate_hz, samples, weights), meter.result())


def test_silence_gives_no_values() -> None:
    meter = LoudnessMeter(48000, channel_weights(["FL", "FR"]))
    for _ in range(5):
        meter.add(np.zeros((2, 48000), dtype=np.float32))
    assert meter.result() == LoudnessStats()


def test_nothing_added_gives_no_values() -> None:
    meter = LoudnessMeter(44100, channel_weights(["FC"]))
    meter.add(np.zeros((1, 0)))
    assert meter.result() == LoudnessStats()


def test_input_shorter_than_one_gating_block() -> None:
    rate_hz = 48000
    n = np.arange(int(0.3 * rate_hz))
    tone = 0.5 * np.sin(2.0 * np.pi * 1000.0 * n / rate_hz)
    meter = LoudnessMeter(rate_hz, channel_weights(["FL", "FR"]))
    meter.add(np.stack([tone, tone]))
    stats = meter.result()
    assert stats.integrated_lufs is None
    assert stats.max_momentary_lufs is None
    assert stats.max_short_term_lufs is None
    assert stats.loudness_range_lu is None
    assert stats.sample_peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert stats.true_peak_dbtp == pytest.approx(-6.02, abs=0.05)


def test_very_quiet_programme_is_gated_out() -> None:
    """Everything below the -70 LUFS absolute gate: no integrated loudness, no LRA."""
    rng = np.random.default_rng(4)
    samples = 1e-5 * rng.standard_normal((2, 5 * 48000))
    stats = _measure(48000, samples, channel_weights(["FL", "FR"]))
    assert stats.integrated_lufs is None
    assert stats.loudness_range_lu is None
    assert stats.max_momentary_lufs is not None and stats.max_momentary_lufs < -70.0
    assert stats.sample_peak_dbfs is not None


def test_bad_input_is_rejected() -> None:
    meter = LoudnessMeter(48000, [1.0, 1.0])
    with pytest.raises(ValueError):
        meter.add(np.zeros((1, 100)))
    with pytest.raises(ValueError):
        meter.add(np.zeros((2, 100), dtype=np.int16))
    with pytest.raises(ValueError):
        meter.add(np.full((2, 100), np.nan))
    with pytest.raises(ValueError):
        LoudnessMeter(48000, [])
    with pytest.raises(ValueError):
        LoudnessMeter(0, [1.0])


# -- channel weights -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("mono", [1.0]),
        ("stereo", [1.0, 1.0]),
        ("5.1", [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]),
        ("5.1(side)", [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]),
        ("7.1", [1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41]),
    ],
)
def test_channel_weights_for_pyav_layouts(layout: str, expected: list[float]) -> None:
    names = [channel.name for channel in av.AudioLayout(layout).channels]
    assert channel_weights(names).tolist() == expected


def test_channel_weights_edge_cases() -> None:
    assert channel_weights(["XYZ"]).tolist() == [1.0]  # unknown single channel: mono
    assert channel_weights(["FL", "FR", "FLC", "FRC", "BC", "TC", "??"]).tolist() == [1.0] * 7
    assert channel_weights(["FL", "FR", "LFE2"]).tolist() == [1.0, 1.0, 0.0]


# -- bounded memory --------------------------------------------------------------------


def _state_nbytes(obj: object, depth: int = 2) -> int:
    """Bytes of all numpy arrays reachable from an object's attributes (two levels deep)."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif depth > 0 and hasattr(value, "__dict__"):
            total += _state_nbytes(value, depth - 1)
    return total


def test_memory_does_not_grow_with_duration() -> None:
    rate_hz = 48000
    rng = np.random.default_rng(2)
    gains = np.array([1.0, 0.3, 0.05, 0.6, 0.0, 0.15, 0.9])
    chunks = [(g * _white(rng, 2, rate_hz)).astype(np.float32) for g in gains]
    meter = LoudnessMeter(rate_hz, channel_weights(["FL", "FR"]))

    def feed(seconds: range) -> int:
        tracemalloc.reset_peak()
        for i in seconds:
            meter.add(chunks[i % len(chunks)])
        return tracemalloc.get_traced_memory()[1]

    tracemalloc.start()
    try:
        peak_early = feed(range(10))
        state_early, current_early = _state_nbytes(meter), tracemalloc.get_traced_memory()[0]
        peak_late = feed(range(10, 600))
        state_late, current_late = _state_nbytes(meter), tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert meter.result().integrated_lufs is not None
    assert state_late == state_early
    assert current_late - current_early < 16 * 1024
    assert peak_late - peak_early < 64 * 1024
