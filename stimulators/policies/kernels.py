"""Numba kernels of the policies' per-chunk work.

A policy runs on every chunk, but the path that makes a command runs only when a
spike qualifies, every few tens of milliseconds: by then its code has left the cache,
and each small numpy operation costs tens of µs. One compiled call replaces them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def select(ids: np.ndarray, samples: np.ndarray, lut: np.ndarray, out: np.ndarray) -> int:
    """Write to ``out`` the indices of the spikes whose id ``lut`` marks (an id below 0
    or past the table reads its last entry), in batch order; return how many, negated
    when their ``samples`` are not in order (the caller sorts them then)."""
    last = lut.size - 1
    n = 0
    ordered = True
    previous = -(2**62)
    for i in range(ids.size):
        u = ids[i]
        if u < 0 or u > last:
            u = last
        if lut[u]:
            out[n] = i
            n += 1
            s = samples[i]
            if s < previous:
                ordered = False
            previous = s
    return n if ordered else -n


def warm_up() -> None:
    """Compile the kernels for the spike fields they read (from the on-disk cache after
    the first time)."""
    from bci.types import SPIKE_DTYPE

    spikes = np.zeros(2, SPIKE_DTYPE)
    lut = np.ones(2, dtype=bool)
    out = np.empty(2, dtype=np.int64)
    for field in ("unit", "channel"):
        select(spikes[field], spikes["sample"], lut, out)
