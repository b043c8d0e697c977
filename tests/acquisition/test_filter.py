"""Streaming filter: chunked filtering equals whole-signal filtering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from acquisition.config import FilterConfig
from acquisition.filter import StreamingFilter
from bci.types import Chunk

FS = 30_000.0


def _run_chunked(filt: StreamingFilter, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pieces = []
    start = 0
    while start < x.shape[0]:
        n = int(rng.integers(1, 200))
        piece = x[start : start + n]
        out = filt.process(Chunk(piece, start, start / FS, FS))
        assert out.first_sample == start
        assert out.data.shape == piece.shape
        pieces.append(out.data)
        start += n
    return np.concatenate(pieces)


@pytest.mark.parametrize("reference", ["none", "average", "median"])
def test_random_chunks_equal_whole_signal(reference: str) -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 20, size=(6000, 8)) + 500).astype(np.float32)  # with a DC offset
    cfg = FilterConfig(reference=reference)
    whole = StreamingFilter(cfg, 8, FS).process(Chunk(x, 0, 0.0, FS)).data
    chunked = _run_chunked(StreamingFilter(cfg, 8, FS), x, rng)
    np.testing.assert_array_equal(chunked, whole)  # bit-identical, whatever the cutting
    if reference == "none":
        ref = signal.sosfilt(
            signal.butter(3, [300, 6000], "bandpass", fs=FS, output="sos"), x, axis=0
        )
        np.testing.assert_allclose(whole, ref, rtol=1e-4, atol=1e-3)


def test_reset_and_delay() -> None:
    filt = StreamingFilter(FilterConfig(), 2, FS)
    assert -10 < filt.delay_samples < 15
    x = np.ones((100, 2), dtype=np.float32)
    a = filt.process(Chunk(x, 0, 0.0, FS)).data
    filt.reset()
    b = filt.process(Chunk(x, 0, 0.0, FS)).data
    np.testing.assert_array_equal(a, b)


def test_highpass_only_and_bad_band() -> None:
    filt = StreamingFilter(FilterConfig(high_hz=None), 1, FS)
    assert filt.sos.shape[0] == 2  # order 3 high-pass: 2 sections
    with pytest.raises(ValueError, match="must exceed"):
        FilterConfig(low_hz=500, high_hz=400)
