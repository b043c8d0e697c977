"""Template learning: noise correlation across electrodes, whitened clustering."""

from __future__ import annotations

from typing import Any

import numpy as np

from acquisition.detection.base import neighbourhoods
from acquisition.sorting.clustering import learn_templates, merge_templates, spatial_correlation


def _probe(n: int = 12) -> np.ndarray:
    return np.column_stack([np.zeros(n), np.arange(n) * 20.0])  # 20 µm pitch


def _correlated_noise(rng, n: int, pos: np.ndarray, n_win: int, decay_um: float):
    d = np.abs(pos[:, 1][:, None] - pos[:, 1][None, :])
    chol = np.linalg.cholesky(np.exp(-d / decay_um))
    return rng.normal(size=(n, n_win, len(pos))) @ chol.T  # unit variance per electrode


def test_spatial_correlation_follows_distance() -> None:
    rng = np.random.default_rng(0)
    pos = _probe()
    nb = neighbourhoods(pos, 60.0)
    x = _correlated_noise(rng, 400, pos, 30, 25.0)
    channels = np.full(400, 5, dtype=np.int32)
    snippets = x[:, :, nb[5][nb[5] >= 0]].astype(np.float32)
    edges, rho = spatial_correlation(
        channels, snippets, {5: [np.arange(400)]}, nb, np.ones(len(pos)), pos
    )
    for dist in (20.0, 40.0, 60.0):
        got = rho[np.digitize(dist, edges) - 1]
        assert abs(got - np.exp(-dist / 25.0)) < 0.05, (dist, got)


def test_whitening_separates_units_alike_on_correlated_noise() -> None:
    rng = np.random.default_rng(1)
    pos = _probe()
    nb = neighbourhoods(pos, 60.0)
    n_win, n = 30, 300
    t = np.arange(n_win) - 10.0
    shape = -np.exp(-0.5 * (t / 2.0) ** 2)
    # two units on electrode 5 that differ electrode by electrode (up, down, up, ...):
    # a direction in which strongly correlated noise is small, once decorrelated
    gain_a = np.exp(-np.abs(np.arange(12) - 5.0) / 1.5)
    gain_b = gain_a * (1 + 0.5 * np.where(np.arange(12) % 2 == 0, 1.0, -1.0))
    label = rng.integers(0, 2, n)
    gains = np.where(label[:, None] == 0, gain_a, gain_b)
    x = 8.0 * shape[None, :, None] * gains[:, None, :]
    x = x + 2.0 * _correlated_noise(rng, n, pos, n_win, 80.0)
    idx = nb[5][nb[5] >= 0]
    snippets = x[:, :, idx].astype(np.float32)
    channels = np.full(n, 5, dtype=np.int32)
    kw: dict[str, Any] = {
        "n_components": 4,
        "min_size": 20,
        "merge_threshold": 0.05,
        "merge_radius_um": 60.0,
    }
    plain = learn_templates(channels, snippets, nb, np.full(12, 2.0), pos, **kw)
    assert len(plain) == 1  # merged
    found = learn_templates(channels, snippets, nb, np.full(12, 2.0), pos, whiten=True, **kw)
    assert len(found) == 2
    assert sorted(c for _, c, _ in found) == sorted(np.bincount(label).tolist())


def test_large_units_alike_in_shape_are_not_merged_with_an_rms_bound() -> None:
    """Relative distance alone merges two large units of one shape and 25 % apart in
    size; the RMS bound (noise units) keeps them apart and still merges the same unit
    seen twice (differences of the size of the estimation noise)."""
    rng = np.random.default_rng(0)
    pos = np.array([[0.0, 20.0 * i] for i in range(4)])
    shape = -np.exp(-0.5 * ((np.arange(40) - 12) / 3.0) ** 2)
    base = (shape[:, None] * np.array([200.0, 120.0, 60.0, 20.0])[None, :]).astype(np.float32)
    noise = np.full(4, 10.0)
    big = base
    smaller = 0.75 * base  # another neuron: relative distance 0.25, RMS about 1.6 noise
    twin = base + rng.normal(0, 1.0, size=base.shape).astype(np.float32)  # 0.1 noise RMS
    templates = [big, smaller, twin]
    mains = np.zeros(3, dtype=np.int64)
    merged, _, members = merge_templates(templates, [100, 100, 100], mains, pos, 50.0, 0.3)
    assert len(merged) == 1
    merged, _, members = merge_templates(
        templates, [100, 100, 100], mains, pos, 50.0, 0.3, noise=noise, max_rms=0.5
    )
    assert sorted(sorted(m) for m in members) == [[0, 2], [1]]
