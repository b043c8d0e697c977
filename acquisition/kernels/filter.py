"""Causal IIR filtering kernel (second-order sections, state carried between calls)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def sosfilt_inplace(sos: np.ndarray, zi: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Filter ``x`` ``(n_samples, n_channels)`` along axis 0 into ``out``.

    ``sos`` is ``(n_sections, 6)`` float64 as from :func:`scipy.signal.butter`;
    ``zi`` is the ``(n_sections, 2, n_channels)`` float64 state (direct form II
    transposed, like :func:`scipy.signal.sosfilt`), updated in place. The arithmetic
    per sample does not depend on how the signal is cut into calls. The inner loop runs
    over channels (contiguous), so it vectorises.
    """
    n, c_count = x.shape
    n_sec = sos.shape[0]
    v = np.empty(c_count, dtype=np.float64)
    for t in range(n):
        for c in range(c_count):
            v[c] = x[t, c]
        for s in range(n_sec):
            b0, b1, b2 = sos[s, 0], sos[s, 1], sos[s, 2]
            a1, a2 = sos[s, 4], sos[s, 5]
            z0 = zi[s, 0]
            z1 = zi[s, 1]
            for c in range(c_count):
                xv = v[c]
                y = b0 * xv + z0[c]
                z0[c] = b1 * xv - a1 * y + z1[c]
                z1[c] = b2 * xv - a2 * y
                v[c] = y
        for c in range(c_count):
            out[t, c] = v[c]


def warm_up() -> None:
    sos = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    zi = np.zeros((1, 2, 2))
    x = np.zeros((3, 2), dtype=np.float32)
    sosfilt_inplace(sos, zi, x, np.empty_like(x))
