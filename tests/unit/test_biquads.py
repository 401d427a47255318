"""The ffmpeg-backed biquad cascade equals scipy's sosfilt, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import sosfilt

from mediamill.pipeline.biquads import BiquadCascade
from mediamill.pipeline.loudness import _k_weighting_sos


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 6), (8000, 1), (96000, 13)])
def test_matches_sosfilt_across_arbitrary_chunks(rate: int, channels: int) -> None:
    sos = _k_weighting_sos(rate)
    x = (np.random.default_rng(0).standard_normal((channels, rate * 2)) * 0.2).astype(np.float32)
    reference = sosfilt(sos, x.astype(np.float64), axis=-1)
    cascade = BiquadCascade(sos, channels, rate)
    sizes = np.random.default_rng(1).choice([0, 1, 7, 1000, 4096, rate], size=400)
    pieces, start = [], 0
    for n in sizes:
        pieces.append(cascade.filter(x[:, start : start + int(n)]))
        start += int(n)
        if start >= x.shape[1]:
            break
    got = np.concatenate(pieces, axis=1)
    assert got.shape == reference.shape and got.dtype == np.float64
    assert np.abs(got - reference).max() < 1e-10


def test_module_does_not_import_scipy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mediamill.pipeline.analysis; "
        "sys.exit(any(m.startswith('scipy') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
