"""Causal IIR filtering kernel (second-order sections, state carried between calls)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def sosfilt_inplace(sos: np.ndarray, zi: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Filter ``x`` ``(n_samples, n_channels)`` along axis 0 into ``out``.

    ``sos`` is ``(n_sections, 6)`` float64 as from :func:`scipy.signal.butter`;
    ``zi`` is the ``(n_channels, n_sections, 2)`` float64 state (direct form II
    transposed, like :func:`scipy.signal.sosfilt`), updated in place. The arithmetic
    per sample does not depend on how the signal is cut into calls.
    """
    n, c_count = x.shape
    n_sec = sos.shape[0]
    for t in range(n):
        for c in range(c_count):
            v = np.float64(x[t, c])
            for s in range(n_sec):
                y = sos[s, 0] * v + zi[c, s, 0]
                zi[c, s, 0] = sos[s, 1] * v - sos[s, 4] * y + zi[c, s, 1]
                zi[c, s, 1] = sos[s, 2] * v - sos[s, 5] * y
                v = y
            out[t, c] = v


def warm_up() -> None:
    sos = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    zi = np.zeros((2, 1, 2))
    x = np.zeros((3, 2), dtype=np.float32)
    sosfilt_inplace(sos, zi, x, np.empty_like(x))
