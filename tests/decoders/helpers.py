"""Helpers shared by the decoder tests: spike batches from arrays, chunked feeding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bci.types import SpikeBatch, empty_spikes

FS = 30_000.0


def batch(
    samples: np.ndarray, units: np.ndarray, first: int, end: int, fs: float = FS
) -> SpikeBatch:
    """A spike batch covering ``[first, end)`` with the given spikes (time-ordered)."""
    order = np.argsort(samples, kind="stable")
    spikes = empty_spikes(len(samples))
    spikes["sample"] = np.asarray(samples)[order]
    spikes["unit"] = np.asarray(units)[order]
    spikes["time"] = spikes["sample"] / fs
    return SpikeBatch(
        spikes=spikes, first_sample=first, end_sample=end, timestamp=first / fs, sample_rate=fs
    )


def chunks(
    samples: np.ndarray, units: np.ndarray, start: int, stop: int, size: int, fs: float = FS
) -> Iterator[SpikeBatch]:
    """Cut a spike train into consecutive batches of ``size`` samples over ``[start, stop)``."""
    samples = np.asarray(samples, np.int64)
    units = np.asarray(units, np.int64)
    for first in range(start, stop, size):
        end = min(first + size, stop)
        sel = (samples >= first) & (samples < end)
        yield batch(samples[sel], units[sel], first, end, fs)
