"""A streaming cascade of biquad (second-order IIR) sections, run by ffmpeg's `biquad`
filter through PyAV in double precision.

It replaces `scipy.signal.sosfilt` for the K-weighting pre-filter: the same numbers
(to ~1e-13), but no scipy import, which costs about a second and 60 MB of RSS per
process, more than the filtering itself on a ten-minute file.
"""

from __future__ import annotations

import numpy as np
from av import AudioFrame
from av.error import BlockingIOError as AVBlockingIOError
from av.error import EOFError as AVEOFError
from av.filter import Graph

_NAMES = ("b0", "b1", "b2", "a0", "a1", "a2")


class _MonoChain:
    """abuffer -> biquad x N -> abuffersink for one channel.

    One graph per channel: multichannel graphs in unspecified channel order are
    remixed by ffmpeg, and PyAV miscounts the planes of planar frames of eight or more
    channels (see `analysis.packed_samples`). Mono `dbl` frames are packed, one plane.
    """

    def __init__(self, sos: list[list[float]], sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.pts = 0
        graph = Graph()
        node = graph.add_abuffer(
            format="dbl", sample_rate=sample_rate_hz, layout="mono",
            time_base=f"1/{sample_rate_hz}",
        )
        self.src = node
        for row in sos:
            # repr() of a Python float round-trips exactly: no coefficient is rounded.
            coefficients = ":".join(f"{k}={v!r}" for k, v in zip(_NAMES, row, strict=True))
            section = graph.add("biquad", f"{coefficients}:precision=f64")
            node.link_to(section)
            node = section
        sink = graph.add("abuffersink")
        node.link_to(sink)
        graph.configure()
        self.graph = graph

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        frame = AudioFrame.from_ndarray(x.reshape(1, -1), format="dbl", layout="mono")
        frame.sample_rate = self.sample_rate_hz
        frame.pts = self.pts
        self.pts += x.size
        self.graph.push(frame)
        filled = 0
        while filled < x.size:
            try:
                piece = self.graph.pull().to_ndarray().reshape(-1)
            except (AVBlockingIOError, AVEOFError):
                break
            out[filled : filled + piece.size] = piece
            filled += piece.size
        if filled != x.size:  # biquads have no latency: anything else is a bug
            raise RuntimeError(f"biquad graph returned {filled} of {x.size} samples")


class BiquadCascade:
    """Filters planar audio chunk by chunk, carrying the filter state across chunks.

    `sos` has one row `[b0, b1, b2, a0, a1, a2]` per section (scipy's layout). The
    output has the input's shape and is float64.
    """

    def __init__(self, sos: np.ndarray, channels: int, sample_rate_hz: int) -> None:
        rows = np.asarray(sos, dtype=np.float64).tolist()
        self._chains = [_MonoChain(rows, sample_rate_hz) for _ in range(channels)]

    def filter(self, x: np.ndarray) -> np.ndarray:
        """Filter `x` of shape (channels, n); returns float64 of the same shape."""
        out = np.empty(x.shape, dtype=np.float64)
        if x.shape[1]:
            for chain, channel, dest in zip(self._chains, x, out, strict=True):
                chain.run(np.ascontiguousarray(channel, dtype=np.float64), dest)
        return out
