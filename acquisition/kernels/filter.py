"""Causal IIR filtering kernel (second-order sections, state carried between calls)."""

from __future__ import annotations

import numba
import numpy as np

#: Reference codes of :func:`sosfilt_inplace`.
REF_NONE, REF_AVERAGE, REF_MEDIAN = 0, 1, 2

# fused multiply-add allowed (nothing else of fastmath): about 25% faster. A channel's
# arithmetic is the same compiled code whatever the chunking, so chunked output stays
# bit-identical to whole-signal output.
_CONTRACT = {"contract"}


@numba.njit(cache=True, nogil=True, inline="always", fastmath=_CONTRACT)
def _section3(sos: np.ndarray, zi: np.ndarray, s: int, row: np.ndarray, c_count: int) -> None:
    """Sections ``s, s+1, s+2`` on ``row`` in place, fused: one pass over the channels,
    the intermediate values stay in registers."""
    b00, b01, b02, a01, a02 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
    b10, b11, b12 = sos[s + 1, 0], sos[s + 1, 1], sos[s + 1, 2]
    a11, a12 = sos[s + 1, 4], sos[s + 1, 5]
    b20, b21, b22 = sos[s + 2, 0], sos[s + 2, 1], sos[s + 2, 2]
    a21, a22 = sos[s + 2, 4], sos[s + 2, 5]
    z00, z01 = zi[s, 0], zi[s, 1]
    z10, z11 = zi[s + 1, 0], zi[s + 1, 1]
    z20, z21 = zi[s + 2, 0], zi[s + 2, 1]
    for c in range(c_count):
        xv = row[c]
        y = b00 * xv + z00[c]
        z00[c] = b01 * xv - a01 * y + z01[c]
        z01[c] = b02 * xv - a02 * y
        xv = y
        y = b10 * xv + z10[c]
        z10[c] = b11 * xv - a11 * y + z11[c]
        z11[c] = b12 * xv - a12 * y
        xv = y
        y = b20 * xv + z20[c]
        z20[c] = b21 * xv - a21 * y + z21[c]
        z21[c] = b22 * xv - a22 * y
        row[c] = y


@numba.njit(cache=True, nogil=True, inline="always", fastmath=_CONTRACT)
def _section2(sos: np.ndarray, zi: np.ndarray, s: int, row: np.ndarray, c_count: int) -> None:
    """Sections ``s, s+1`` on ``row`` in place, fused."""
    b00, b01, b02, a01, a02 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
    b10, b11, b12 = sos[s + 1, 0], sos[s + 1, 1], sos[s + 1, 2]
    a11, a12 = sos[s + 1, 4], sos[s + 1, 5]
    z00, z01 = zi[s, 0], zi[s, 1]
    z10, z11 = zi[s + 1, 0], zi[s + 1, 1]
    for c in range(c_count):
        xv = row[c]
        y = b00 * xv + z00[c]
        z00[c] = b01 * xv - a01 * y + z01[c]
        z01[c] = b02 * xv - a02 * y
        xv = y
        y = b10 * xv + z10[c]
        z10[c] = b11 * xv - a11 * y + z11[c]
        z11[c] = b12 * xv - a12 * y
        row[c] = y


@numba.njit(cache=True, nogil=True, inline="always", fastmath=_CONTRACT)
def _section1(sos: np.ndarray, zi: np.ndarray, s: int, row: np.ndarray, c_count: int) -> None:
    """Section ``s`` on ``row`` in place."""
    b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
    z0, z1 = zi[s, 0], zi[s, 1]
    for c in range(c_count):
        xv = row[c]
        y = b0 * xv + z0[c]
        z0[c] = b1 * xv - a1 * y + z1[c]
        z1[c] = b2 * xv - a2 * y
        row[c] = y


@numba.njit(cache=True, nogil=True, fastmath=_CONTRACT)
def sosfilt_inplace(
    sos: np.ndarray,
    zi: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    row: np.ndarray,
    reference: int,
) -> None:
    """Filter ``x`` ``(n_samples, n_channels)`` along axis 0 into ``out``, then re-reference.

    ``sos`` is ``(n_sections, 6)`` float64 as from :func:`scipy.signal.butter`;
    ``zi`` is the ``(n_sections, 2, n_channels)`` float64 state (direct form II
    transposed, like :func:`scipy.signal.sosfilt`), updated in place; ``row`` is a
    ``(n_channels,)`` float64 work buffer. ``reference`` (:data:`REF_NONE`,
    :data:`REF_AVERAGE`, :data:`REF_MEDIAN`) subtracts, per sample, the mean or median
    over channels of the filtered values (computed in float64).

    The arithmetic per sample does not depend on how the signal is cut into calls.
    Sections run three (then two, then one) at a time in one pass over the channels,
    which are contiguous, so the loop vectorises and the state is read once per pass.
    """
    n, c_count = x.shape
    n_sec = sos.shape[0]
    for t in range(n):
        for c in range(c_count):
            row[c] = x[t, c]
        s = 0
        while n_sec - s >= 3:
            _section3(sos, zi, s, row, c_count)
            s += 3
        if n_sec - s == 2:
            _section2(sos, zi, s, row, c_count)
        elif n_sec - s == 1:
            _section1(sos, zi, s, row, c_count)
        if reference == REF_AVERAGE:
            ref = 0.0
            for c in range(c_count):
                ref += row[c]
            ref /= c_count
            for c in range(c_count):
                out[t, c] = row[c] - ref
        elif reference == REF_MEDIAN:
            ref = np.median(row)
            for c in range(c_count):
                out[t, c] = row[c] - ref
        else:
            for c in range(c_count):
                out[t, c] = row[c]


def warm_up() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    sos = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    sosfilt_inplace(sos, np.zeros((1, 2, 2)), x, np.empty_like(x), np.empty(2), REF_NONE)
