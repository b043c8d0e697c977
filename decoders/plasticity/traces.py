"""Shared kernels: exponential spike traces kept lazily (value + sample of last update)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def trace_add_spikes(
    samples: np.ndarray,
    units: np.ndarray,
    value: np.ndarray,
    last: np.ndarray,
    tau: float,
    increment: float,
) -> None:
    """Add ``increment`` to unit ``units[k]``'s trace at ``samples[k]`` (tau in samples)."""
    for k in range(samples.size):
        u = units[k]
        s = samples[k]
        value[u] = value[u] * math.exp(-(s - last[u]) / tau) + increment
        last[u] = s


@njit(cache=True, nogil=True)
def trace_at(value: np.ndarray, last: np.ndarray, tau: float, t: int, out: np.ndarray) -> None:
    """Every trace decayed to absolute sample ``t`` (no spikes after their ``last``)."""
    for u in range(value.size):
        out[u] = value[u] * math.exp(-(t - last[u]) / tau)
