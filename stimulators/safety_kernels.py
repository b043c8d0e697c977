"""Numba kernels of the safety envelope's usage ledgers (see :mod:`stimulators.safety`).

A ledger is a ring of per-bin amounts for absolute bins ``[low, low + size)``. The
kernels do in one compiled call what a dozen small numpy operations did, with the same
floating-point operations in the same order, so the envelope's decisions do not change.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def max_window(
    data: np.ndarray,
    low: int,
    floor: int,
    has_ring: bool,
    first: int,
    amounts: np.ndarray,
    window_bins: int,
) -> float:
    """Largest total over ``window_bins + 1`` consecutive bins of the ledger with
    ``amounts`` added from bin ``first`` (bins before ``floor``, or outside the ring,
    count as empty)."""
    size = data.size
    lo = first - window_bins
    n = amounts.size + 2 * window_bins
    lowest = max(low, floor)
    csum = np.empty(n + 1)
    csum[0] = 0.0
    acc = 0.0
    for i in range(n):
        idx = lo + i
        v = 0.0
        if has_ring and idx >= lowest and idx < low + size:
            v = data[idx % size]
        j = i - window_bins
        if 0 <= j < amounts.size:
            v += amounts[j]
        acc += v
        csum[i + 1] = acc
    span = window_bins + 1
    best = -np.inf
    for i in range(n + 1 - span):
        d = csum[i + span] - csum[i]
        if d > best:
            best = d
    return best


@njit(cache=True, nogil=True)
def advance(data: np.ndarray, low: int, floor: int) -> int:
    """Empty the bins that fall out of the ring as its low end moves to ``floor``;
    returns the new low end."""
    if floor <= low:
        return low
    size = data.size
    if floor - low >= size:
        data[:] = 0.0
    else:
        for idx in range(low, floor):
            data[idx % size] = 0.0
    return floor


@njit(cache=True, nogil=True)
def add(data: np.ndarray, low: int, first: int, amounts: np.ndarray) -> None:
    """Add ``amounts`` to the bins from ``first`` (the caller checked the range)."""
    size = data.size
    for k in range(amounts.size):
        data[(first + k) % size] += amounts[k]


def warm_up() -> None:
    """Compile the kernels (from the on-disk cache after the first time)."""
    data = np.zeros(8)
    amounts = np.ones(2)
    low = advance(data, 0, 1)
    add(data, low, 2, amounts)
    max_window(data, low, 0, True, 2, amounts, 1)
