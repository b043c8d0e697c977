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


@pytest.mark.parametrize(
    ("order", "high_hz"),
    [(1, 6000.0), (2, 6000.0), (4, 6000.0), (5, 6000.0), (8, 6000.0), (6, None)],
)
def test_every_section_count_matches_scipy(order: int, high_hz: float | None) -> None:
    """The kernel fuses sections by three, two and one: every remainder is exercised
    (37 channels: the vectorised loop over channels and its scalar remainder)."""
    rng = np.random.default_rng(order)
    x = rng.normal(0, 20, size=(3000, 37)).astype(np.float32)
    cfg = FilterConfig(order=order, high_hz=high_hz)
    filt = StreamingFilter(cfg, 37, FS)
    whole = filt.process(Chunk(x, 0, 0.0, FS)).data
    chunked = _run_chunked(StreamingFilter(cfg, 37, FS), x, rng)
    np.testing.assert_array_equal(chunked, whole)
    ref = signal.sosfilt(filt.sos, x.astype(np.float64), axis=0)
    np.testing.assert_allclose(whole, ref, rtol=1e-4, atol=1e-3)


def test_reference_subtracts_the_mean_or_median_over_channels() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 20, size=(500, 7)).astype(np.float32)
    plain = StreamingFilter(FilterConfig(), 7, FS).process(Chunk(x, 0, 0.0, FS)).data
    for reference, centre in (("average", np.mean), ("median", np.median)):
        cfg = FilterConfig(reference=reference)
        got = StreamingFilter(cfg, 7, FS).process(Chunk(x, 0, 0.0, FS)).data
        want = plain - centre(plain.astype(np.float64), axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, atol=1e-3)


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
