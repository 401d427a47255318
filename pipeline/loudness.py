"""Streaming ITU-R BS.1770-4 / EBU R128 loudness meter with bounded memory.

`LoudnessMeter` takes planar float audio in chunks of any length and keeps only
fixed-size state: K-weighting filter states, the last 3 s of 100 ms sub-block
energies, two fine loudness histograms, running maxima and a carry-over of a few
dozen samples for the true-peak interpolator. Memory therefore does not grow with
the duration of the input, and the result does not depend on how it was chunked.

Measures: integrated loudness (BS.1770-4 gating), loudness range (EBU Tech 3342),
maximum momentary (400 ms) and short-term (3 s) loudness, sample peak and true peak
(4x oversampling, BS.1770-4 Annex 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mediamill.pipeline.biquads import BiquadCascade
from mediamill.schemas.media import LoudnessStats

__all__ = ["LoudnessMeter", "channel_weights"]

# BS.1770-4 eq. 2: loudness = -0.691 + 10 log10(sum of weighted mean squares).
_LOUDNESS_OFFSET_LU = -0.691
_ABS_GATE_LUFS = -70.0
_REL_GATE_LU = -10.0
_LRA_REL_GATE_LU = -20.0
_LRA_LOW_PERCENTILE = 10.0
_LRA_HIGH_PERCENTILE = 95.0

_SUB_BLOCKS_PER_S = 10  # 100 ms sub-blocks: the hop of both momentary and short-term windows
_MOMENTARY_SUB_BLOCKS = 4  # 400 ms
_SHORT_TERM_SUB_BLOCKS = 30  # 3 s

# Histogram of gated loudness values: 0.01 LU bins from the absolute gate up to +30 LUFS.
# Louder values (possible only for clipped input) land in the last bin; energies stay exact.
_HIST_MIN_LUFS = _ABS_GATE_LUFS
_HIST_BIN_LU = 0.01
_HIST_BINS = 10_000

_ABS_GATE_ENERGY = 10.0 ** ((_ABS_GATE_LUFS - _LOUDNESS_OFFSET_LU) / 10.0)

_MIN_SAMPLE_RATE_HZ = 4000  # the K-weighting shelf (1.68 kHz) must lie below Nyquist
# Chunks shorter than this are collected first: per-chunk overhead (~0.1 ms) would
# otherwise dominate with tiny chunks such as 1024 samples.
_MIN_BATCH_S = 0.075

_LFE_NAMES = frozenset({"LFE", "LFE2"})
# BS.1770-4 Table 3: channels at 60-120 degrees azimuth (the surrounds) get +1.5 dB.
_SURROUND_NAMES = frozenset({"BL", "BR", "SL", "SR", "SDL", "SDR"})
_SURROUND_WEIGHT = 1.41

# True-peak interpolator: a Kaiser-windowed sinc at 4x, i.e. a Nyquist (4th-band) filter.
# Its phase 0 is the input sample itself, so only phases 1..3 are computed; each uses
# 2 * _TP_HALF_TAPS input samples. Response error < 0.35 % (0.03 dB) up to 0.4 fs.
_TP_OVERSAMPLING = 4
_TP_HALF_TAPS = 8
_TP_KAISER_BETA = 5.0
# Output positions are computed in rows of this many samples, one matrix product per
# batch of rows (see `_true_peak_matrix`); must be >= 2 * _TP_HALF_TAPS - 1.
_TP_ROW = 16
# Rows are skipped (or not) in groups of this many, so that bounding them stays cheap.
_TP_GROUP_ROWS = 16


def channel_weights(channel_names: Sequence[str]) -> np.ndarray:
    """BS.1770-4 channel weights for ffmpeg/PyAV channel names (`AudioLayout.channels[i].name`).

    Front and other channels weigh 1.0, the surrounds (BL, BR, SL, SR) 1.41, and LFE
    channels 0.0 (excluded from loudness). A single channel, whatever its name, is a
    mono programme and weighs 1.0; unknown names weigh 1.0.
    """
    names = [str(name).strip().upper() for name in channel_names]
    if len(names) == 1:
        return np.ones(1)
    return np.array(
        [
            0.0 if name in _LFE_NAMES else _SURROUND_WEIGHT if name in _SURROUND_NAMES else 1.0
            for name in names
        ],
        dtype=np.float64,
    )


def _k_weighting_sos(sample_rate_hz: int) -> np.ndarray:
    """The BS.1770 K-weighting pre-filter as two second-order sections, for any rate.

    Brecht De Man's derivation of the high-shelf and high-pass stages (as in libebur128),
    computed exactly as pyloudnorm's `IIRfilter` types 'high_shelf_DeMan' and
    'high_pass_DeMan' do, so both meters filter identically.
    """
    rate = float(sample_rate_hz)
    # Stage 1: high shelf, +4 dB above ~1.7 kHz (head acoustics).
    gain_db, q, fc_hz = 3.99984385397, 0.7071752369554193, 1681.9744509555319
    k = np.tan(np.pi * fc_hz / rate)
    vh = np.power(10.0, gain_db / 20.0)
    vb = np.power(vh, 0.499666774155)
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # Stage 2: second-order high pass at ~38 Hz (RLB weighting).
    q, fc_hz = 0.5003270373253953, 38.13547087613982
    k = np.tan(np.pi * fc_hz / rate)
    a0 = 1.0 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, high_pass], dtype=np.float64)


def _true_peak_matrix() -> tuple[np.ndarray, float]:
    """The 4x interpolator as one matrix, plus its largest per-phase L1 norm.

    A row of `_TP_ROW + 2 * _TP_HALF_TAPS - 1` consecutive input samples times the
    matrix gives the three in-between values (phases 1..3) for `_TP_ROW` consecutive
    sample positions: a dense GEMM, far faster than polyphase filtering in numpy.
    The L1 norm bounds |interpolated value| <= L1 * max|input|, which lets rows that
    cannot raise the running maximum be skipped without changing the result.
    """
    half, os_factor, row = _TP_HALF_TAPS, _TP_OVERSAMPLING, _TP_ROW
    m = np.arange(-os_factor * half, os_factor * half + 1)
    prototype = np.sinc(m / os_factor) * np.kaiser(m.size, _TP_KAISER_BETA)
    offsets = np.arange(-half + 1, half + 1)  # input sample n + j contributes to n + p/4
    matrix = np.zeros((row + 2 * half - 1, (os_factor - 1) * row))
    l1_max = 0.0
    for phase in range(1, os_factor):
        taps = prototype[phase - os_factor * offsets + os_factor * half]
        taps = taps / taps.sum()  # exact unity gain at DC for every phase
        l1_max = max(l1_max, float(np.abs(taps).sum()))
        for i in range(row):
            matrix[i + offsets + half - 1, (phase - 1) * row + i] = taps
    return matrix, l1_max


_TP_MATRIX, _TP_L1_MAX = _true_peak_matrix()
_TP_MATRIX_F32 = _TP_MATRIX.astype(np.float32)
_TP_WIDTH = _TP_MATRIX.shape[0]
# Bound on |float32 - float64| of one interpolated value, relative to max |input|: float32
# rounding of input and taps plus a 31-term dot product is <= 33 * 2**-24 * L1 (~4.2e-6).
_TP_F32_MARGIN = 1e-5


def _to_lufs(energy: float) -> float | None:
    """Loudness of a weighted mean-square energy; None for zero energy."""
    return _LOUDNESS_OFFSET_LU + 10.0 * math.log10(energy) if energy > 0.0 else None


def _to_db(amplitude: float) -> float | None:
    """Level of a peak amplitude in dB re full scale; None for zero (no signal)."""
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else None


class _GatingHistogram:
    """Counts and energy sums of loudness values above the absolute gate, in 0.01 LU bins.

    Replaces the list of per-block values that gating needs: each bin's energy sum keeps
    the gated power mean exact, and each bin's mean energy stands for its members where a
    single value is needed (the bin straddling a relative gate, percentiles), which is off
    by at most one bin width (0.01 LU).
    """

    def __init__(self) -> None:
        self.counts = np.zeros(_HIST_BINS, dtype=np.int64)
        self.energies = np.zeros(_HIST_BINS, dtype=np.float64)

    def add(self, energies: np.ndarray) -> None:
        """Add block energies (weighted mean squares); those at or below -70 LUFS are gated."""
        gated = energies[energies > _ABS_GATE_ENERGY]
        if gated.size == 0:
            return
        lufs = _LOUDNESS_OFFSET_LU + 10.0 * np.log10(gated)
        bins = np.floor((lufs - _HIST_MIN_LUFS) / _HIST_BIN_LU).astype(np.intp)
        np.clip(bins, 0, _HIST_BINS - 1, out=bins)
        np.add.at(self.counts, bins, 1)
        np.add.at(self.energies, bins, gated)

    def relative_gate(self, gate_lu: float, *, inclusive: bool) -> np.ndarray | None:
        """Mask of bins passing a gate `gate_lu` relative to the mean of all values, or None."""
        total = int(self.counts.sum())
        if total == 0:
            return None
        threshold = float(self.energies.sum()) / total * 10.0 ** (gate_lu / 10.0)
        occupied = self.counts > 0
        bin_mean = np.zeros(_HIST_BINS)
        np.divide(self.energies, self.counts, out=bin_mean, where=occupied)
        passing = bin_mean >= threshold if inclusive else bin_mean > threshold
        mask = occupied & passing
        return mask if mask.any() else None

    def percentiles(self, mask: np.ndarray, percents: Sequence[float]) -> list[float]:
        """Percentiles (linear interpolation, as numpy's default) of the masked values."""
        counts = self.counts[mask]
        values = _LOUDNESS_OFFSET_LU + 10.0 * np.log10(self.energies[mask] / counts)
        cumulative = np.cumsum(counts)
        last = int(cumulative[-1]) - 1
        result = []
        for percent in percents:
            position = percent / 100.0 * last
            low = math.floor(position)
            high = min(low + 1, last)
            v_low, v_high = values[np.searchsorted(cumulative, [low, high], side="right")]
            result.append(float(v_low + (v_high - v_low) * (position - low)))
        return result


class LoudnessMeter:
    """Streaming BS.1770-4 / EBU R128 meter: feed chunks with `add`, read with `result`.

    `weights` are the BS.1770 channel weights (see `channel_weights`); channels weighted
    0 (LFE) are not filtered at all but still count towards the peaks. Results do not
    depend on chunking (up to float rounding) and `result` may be called at any time.
    """

    def __init__(self, sample_rate_hz: int, weights: Sequence[float]) -> None:
        weights_arr = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights_arr.size == 0:
            raise ValueError("at least one channel weight is required")
        if not np.all(np.isfinite(weights_arr)) or np.any(weights_arr < 0.0):
            raise ValueError(f"channel weights must be finite and >= 0, got {weights_arr}")
        if int(sample_rate_hz) != sample_rate_hz or sample_rate_hz < _MIN_SAMPLE_RATE_HZ:
            raise ValueError(
                f"sample rate must be an integer >= {_MIN_SAMPLE_RATE_HZ} Hz, got {sample_rate_hz}"
            )
        self._rate_hz = int(sample_rate_hz)
        self._channels = weights_arr.size
        active = np.flatnonzero(weights_arr > 0.0)
        # None means "all channels", which avoids a gather copy per chunk.
        self._active: np.ndarray | None = None if active.size == self._channels else active
        self._active_weights = weights_arr[active]
        self._k_filter = BiquadCascade(_k_weighting_sos(self._rate_hz), active.size, self._rate_hz)

        self._samples_seen = 0  # per channel
        self._sub_blocks_done = 0
        self._partial_energy = 0.0  # weighted sum of squares of the unfinished sub-block
        ring_size = _SHORT_TERM_SUB_BLOCKS - 1
        self._recent_sub_blocks = np.zeros(ring_size)  # oldest first; sums of squares
        self._momentary_hist = _GatingHistogram()
        self._short_term_hist = _GatingHistogram()
        self._max_momentary_energy = 0.0
        self._max_short_term_energy = 0.0

        self._sample_peak = 0.0
        self._interpolated_peak = 0.0  # max |phase 1..3| over positions done so far
        # Samples x[s - H + 1 .. e - 1], where s is the next sample position whose
        # in-between values are due and e the number of samples seen. Starting at s = -1
        # also covers the interval just before the first sample, like the one after the last.
        self._tp_tail = np.zeros((self._channels, _TP_HALF_TAPS))

        # Short chunks wait here (exact in float64) until a batch is full.
        self._batch = np.empty((self._channels, max(1, round(_MIN_BATCH_S * self._rate_hz))))
        self._batch_fill = 0

    def add(self, samples: np.ndarray) -> None:
        """Add a chunk of shape (channels, n), float32 or float64, full scale = 1.0.

        Chunks may have any length, including 0. The meter keeps no reference to
        `samples`, so the caller may reuse its buffer.
        """
        x = np.asarray(samples)
        if x.ndim != 2 or x.shape[0] != self._channels:
            raise ValueError(f"expected shape ({self._channels}, n), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"expected float samples (full scale 1.0), got {x.dtype}")
        if x.shape[1] == 0:
            return
        peak = float(max(x.max(), -x.min()))
        if not math.isfinite(peak):
            raise ValueError("samples contain NaN or infinity")
        self._sample_peak = max(self._sample_peak, peak)

        batch_len = self._batch.shape[1]
        if self._batch_fill:
            take = min(x.shape[1], batch_len - self._batch_fill)
            self._batch[:, self._batch_fill : self._batch_fill + take] = x[:, :take]
            self._batch_fill += take
            x = x[:, take:]
            if self._batch_fill == batch_len:
                self._flush_batch()
        if x.shape[1] >= batch_len:
            self._process(x)
        elif x.shape[1]:
            self._batch[:, : x.shape[1]] = x
            self._batch_fill = x.shape[1]

    def result(self) -> LoudnessStats:
        """The measurements so far; the meter stays usable (more chunks may follow)."""
        self._flush_batch()  # same state as if the samples had come in a larger chunk
        integrated = None
        mask = self._momentary_hist.relative_gate(_REL_GATE_LU, inclusive=False)
        if mask is not None:
            hist = self._momentary_hist
            integrated = _to_lufs(float(hist.energies[mask].sum()) / int(hist.counts[mask].sum()))

        loudness_range = None
        mask = self._short_term_hist.relative_gate(_LRA_REL_GATE_LU, inclusive=True)
        if mask is not None:
            low, high = self._short_term_hist.percentiles(
                mask, (_LRA_LOW_PERCENTILE, _LRA_HIGH_PERCENTILE)
            )
            loudness_range = high - low

        true_peak = max(self._sample_peak, self._interpolated_peak, self._pending_true_peak())
        return LoudnessStats(
            integrated_lufs=integrated,
            true_peak_dbtp=_to_db(true_peak),
            loudness_range_lu=loudness_range,
            sample_peak_dbfs=_to_db(self._sample_peak),
            max_momentary_lufs=_to_lufs(self._max_momentary_energy),
            max_short_term_lufs=_to_lufs(self._max_short_term_energy),
        )

    def _flush_batch(self) -> None:
        if self._batch_fill:
            fill, self._batch_fill = self._batch_fill, 0
            self._process(self._batch[:, :fill])

    def _process(self, x: np.ndarray) -> None:
        """Measure a chunk whose sample peak has already been taken."""
        self._add_true_peak(x)
        if self._active_weights.size:
            self._add_loudness(x)
        self._samples_seen += x.shape[1]

    # -- loudness -------------------------------------------------------------------------

    def _sub_block_start(self, index: np.ndarray | int) -> np.ndarray | int:
        """First sample of 100 ms sub-block `index` (exact for rates not divisible by 10)."""
        return index * self._rate_hz // _SUB_BLOCKS_PER_S

    def _add_loudness(self, x: np.ndarray) -> None:
        """K-weight the chunk, close finished sub-blocks and feed the windows they complete."""
        channels = x if self._active is None else x[self._active]
        filtered = self._k_filter.filter(channels)
        np.square(filtered, out=filtered)

        start, n = self._samples_seen, x.shape[1]
        end = start + n
        # Sub-blocks k with start(k) in (start, end] finish within this chunk (k - 1 done).
        last_k = (_SUB_BLOCKS_PER_S * end + _SUB_BLOCKS_PER_S - 1) // self._rate_hz
        first_k = self._sub_blocks_done + 1
        if last_k < first_k:
            self._partial_energy += float(self._active_weights @ filtered.sum(axis=1))
            return
        cuts = self._sub_block_start(np.arange(first_k, last_k + 1, dtype=np.int64)) - start
        inner = cuts[cuts < n]
        segments = np.add.reduceat(filtered, np.concatenate(([0], inner)), axis=1)
        energies = self._active_weights @ segments
        finished = energies[: cuts.size].copy()
        finished[0] += self._partial_energy
        self._partial_energy = float(energies[cuts.size]) if inner.size == cuts.size else 0.0
        self._add_sub_blocks(finished)

    def _add_sub_blocks(self, sums: np.ndarray) -> None:
        """Momentary and short-term windows ending at each new sub-block; update the ring."""
        first = self._sub_blocks_done
        ring = self._recent_sub_blocks
        kept = min(first, ring.size)
        series = np.concatenate((ring[ring.size - kept :], sums))
        series_first = first - kept  # sub-block index of series[0]
        last = first + sums.size - 1
        for length, hist, attr in (
            (_MOMENTARY_SUB_BLOCKS, self._momentary_hist, "_max_momentary_energy"),
            (_SHORT_TERM_SUB_BLOCKS, self._short_term_hist, "_max_short_term_energy"),
        ):
            first_end = max(first, length - 1)
            if first_end > last:
                continue
            window_sums = sliding_window_view(series, length).sum(axis=1)
            window_sums = window_sums[first_end - (series_first + length - 1) :]
            ends = np.arange(first_end, last + 1, dtype=np.int64)
            lengths = self._sub_block_start(ends + 1) - self._sub_block_start(ends + 1 - length)
            energies = window_sums / lengths
            setattr(self, attr, max(getattr(self, attr), float(energies.max())))
            hist.add(energies)
        newest = series[-ring.size :]
        self._recent_sub_blocks = np.concatenate((np.zeros(ring.size - newest.size), newest))
        self._sub_blocks_done = last + 1

    # -- true peak ------------------------------------------------------------------------

    def _add_true_peak(self, x: np.ndarray) -> None:
        """Interpolate every whole row of positions whose look-ahead has arrived."""
        tail = self._tp_tail
        total = tail.shape[1] + x.shape[1]
        rows = max(0, (total - 2 * _TP_HALF_TAPS + 1) // _TP_ROW)
        buf = self._tp_buffer(total, rows)
        buf[:, : tail.shape[1]] = tail
        buf[:, tail.shape[1] : total] = x
        if rows:
            peak = self._interpolate_rows(buf, rows, valid=None)
            self._interpolated_peak = max(self._interpolated_peak, peak)
        self._tp_tail = buf[:, rows * _TP_ROW : total].copy()

    def _pending_true_peak(self) -> float:
        """Peak of the positions still waiting for look-ahead, as if silence followed."""
        tail = self._tp_tail
        pending = tail.shape[1] - (_TP_HALF_TAPS - 1)
        if pending <= 0:
            return 0.0
        rows = -(-pending // _TP_ROW)
        buf = self._tp_buffer(tail.shape[1], rows)
        buf[:, : tail.shape[1]] = tail
        return self._interpolate_rows(buf, rows, valid=pending)

    def _tp_buffer(self, samples: int, rows: int) -> np.ndarray:
        """A buffer for `samples` samples, zero-padded so that row groups can be reshaped."""
        groups = -(-rows // _TP_GROUP_ROWS)
        width = max(samples, (groups + 1) * _TP_GROUP_ROWS * _TP_ROW)
        buf = np.empty((self._channels, width))
        buf[:, samples:] = 0.0
        return buf

    def _interpolate_rows(self, buf: np.ndarray, rows: int, valid: int | None) -> float:
        """Max |phase 1..3 value| over `rows` rows of positions in `buf` (first `valid` only).

        Exact, but cheap: a group of `_TP_GROUP_ROWS` rows whose bound (L1 norm x max
        |input| over its support) cannot exceed the peak known so far is skipped, and the
        rest is screened in float32 (twice as fast) with only the rows that may hold the
        maximum recomputed in float64. Returns 0.0 when nothing here exceeds the known peak.
        """
        channels, group_len = buf.shape[0], _TP_GROUP_ROWS * _TP_ROW
        groups = -(-rows // _TP_GROUP_ROWS)
        grouped = buf[:, : (groups + 1) * group_len].reshape(channels, groups + 1, group_len)
        group_max = np.maximum(grouped.max(axis=2), -grouped.min(axis=2))
        # A row's support reaches 2H - 1 samples into the next row, hence the next group.
        bound = np.maximum(group_max[:, :-1], group_max[:, 1:]) * _TP_L1_MAX
        known = max(self._sample_peak, self._interpolated_peak)
        due = bound > known
        if not due.any():
            return 0.0
        span = (rows + 1) * _TP_ROW
        heads = buf[:, : rows * _TP_ROW].reshape(channels, rows, _TP_ROW)
        tails = buf[:, _TP_ROW:span].reshape(channels, rows, _TP_ROW)[:, :, : _TP_WIDTH - _TP_ROW]
        if due.all():
            windows = np.empty((channels, rows, _TP_WIDTH), dtype=np.float32)
            windows[:, :, :_TP_ROW] = heads
            windows[:, :, _TP_ROW:] = tails
            windows = windows.reshape(-1, _TP_WIDTH)
            chan_index, row_index = np.divmod(np.arange(channels * rows), rows)
        else:
            chan_index, row_index = np.nonzero(np.repeat(due, _TP_GROUP_ROWS, axis=1)[:, :rows])
            windows = _gather_windows(heads, tails, chan_index, row_index, np.float32)
        screen = windows @ _TP_MATRIX_F32
        np.abs(screen, out=screen)
        if valid is not None:
            screen = _drop_past_end(screen, row_index, valid)
        screen_max = float(screen.max())
        margin = _TP_F32_MARGIN * float(group_max.max())
        if screen_max + margin <= known:
            return 0.0
        # Only rows within 2 margins of the screened maximum can hold the exact maximum.
        hits = np.flatnonzero(screen >= screen_max - 2.0 * margin)  # 1-D: far faster than 2-D
        candidates = np.unique(hits // screen.shape[1])
        chan_index, row_index = chan_index[candidates], row_index[candidates]
        exact = _gather_windows(heads, tails, chan_index, row_index, np.float64) @ _TP_MATRIX
        np.abs(exact, out=exact)
        if valid is not None:
            exact = _drop_past_end(exact, row_index, valid)
        return float(exact.max())


def _gather_windows(
    heads: np.ndarray,
    tails: np.ndarray,
    chan_index: np.ndarray,
    row_index: np.ndarray,
    dtype: type[np.floating],
) -> np.ndarray:
    """The interpolator input rows (head samples + look-ahead) for the given rows."""
    windows = np.empty((row_index.size, _TP_WIDTH), dtype=dtype)
    windows[:, :_TP_ROW] = heads[chan_index, row_index]
    windows[:, _TP_ROW:] = tails[chan_index, row_index]
    return windows


def _drop_past_end(values: np.ndarray, row_index: np.ndarray, valid: int) -> np.ndarray:
    """Zero the interpolated values of positions >= `valid` (rows x (phase, position))."""
    positions = row_index[:, None] * _TP_ROW + np.arange(_TP_ROW)
    phases = _TP_OVERSAMPLING - 1
    keep = np.broadcast_to((positions < valid)[:, None, :], (row_index.size, phases, _TP_ROW))
    return np.where(keep.reshape(row_index.size, -1), values, 0.0)
