"""Per-unit features from spike batches: binned spike counts and exponential traces.

Bins are aligned to absolute sample indices (bin ``b`` covers
``[b * L, (b + 1) * L)`` samples, ``L = round(bin_ms * fs / 1000)``), so the same spikes
give the same bins however the stream was chunked. ``process(batch)`` returns the bins
that the batch completed (often none, for 1 ms chunks and 50 ms bins).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from bci.types import SpikeBatch
from decoders.frames import FeatureFrame
from decoders.plasticity.base import unit_spikes


class CountFeaturesParams(StrictModel):
    """Spike counts per unit per bin."""

    kind: Literal["counts"] = "counts"
    bin_ms: float = Field(50.0, gt=0)


class TraceFeaturesParams(StrictModel):
    """Exponential trace per unit (Hz: each spike adds ``1 / tau``), read at bin ends."""

    kind: Literal["trace"] = "trace"
    bin_ms: float = Field(50.0, gt=0)
    tau_ms: float = Field(100.0, gt=0)


FeatureParams = Annotated[CountFeaturesParams | TraceFeaturesParams, Field(discriminator="kind")]


@njit(cache=True, nogil=True)
def count_bins(
    samples: np.ndarray, units: np.ndarray, open_start: int, bin_len: int, out: np.ndarray
) -> None:
    """Add spikes to ``out[b, unit]``, ``b = (sample - open_start) // bin_len`` (last row open)."""
    last = out.shape[0] - 1
    for k in range(samples.size):
        b = (samples[k] - open_start) // bin_len
        if b > last:
            b = last
        if b >= 0:
            out[b, units[k]] += 1.0


@njit(cache=True, nogil=True)
def trace_bins(
    samples: np.ndarray,
    units: np.ndarray,
    value: np.ndarray,
    last: np.ndarray,
    tau: float,
    increment: float,
    bin_ends: np.ndarray,
    out: np.ndarray,
) -> None:
    """Traces read at each bin end (spikes before the end count), lazily decayed."""
    k = 0
    for b in range(bin_ends.size):
        e = bin_ends[b]
        while k < samples.size and samples[k] < e:
            u = units[k]
            value[u] = value[u] * math.exp(-(samples[k] - last[u]) / tau) + increment
            last[u] = samples[k]
            k += 1
        for u in range(value.size):
            out[b, u] = value[u] * math.exp(-(e - last[u]) / tau)
    while k < samples.size:
        u = units[k]
        value[u] = value[u] * math.exp(-(samples[k] - last[u]) / tau) + increment
        last[u] = samples[k]
        k += 1


class _Binned:
    def __init__(self, n_units: int, bin_ms: float, sample_rate: float) -> None:
        self.n_units = int(n_units)
        self.sample_rate = float(sample_rate)
        self.bin_len = max(1, round(bin_ms * 1e-3 * sample_rate))
        self.bin_s = self.bin_len / self.sample_rate
        self.reset()

    def reset(self) -> None:
        self._next_end: int | None = None

    def _ends(self, batch: SpikeBatch) -> np.ndarray:
        if self._next_end is None:
            self._next_end = (batch.first_sample // self.bin_len + 1) * self.bin_len
        ends = np.arange(self._next_end, batch.end_sample + 1, self.bin_len, dtype=np.int64)
        if ends.size:
            self._next_end = int(ends[-1]) + self.bin_len
        return ends

    def _frame(self, values: np.ndarray, ends: np.ndarray, batch: SpikeBatch) -> FeatureFrame:
        stamps = batch.timestamp + (ends - batch.first_sample) / batch.sample_rate
        return FeatureFrame(values, ends, stamps, self.sample_rate, self.bin_s)


class BinnedCounts(_Binned):
    """Spike batches in, completed bins of spike counts per unit out."""

    def __init__(self, params: CountFeaturesParams, n_units: int, sample_rate: float) -> None:
        self.params = params
        super().__init__(n_units, params.bin_ms, sample_rate)

    def reset(self) -> None:
        super().reset()
        self._carry = np.zeros(self.n_units)

    def process(self, batch: SpikeBatch) -> FeatureFrame:
        ends = self._ends(batch)
        samples, units = unit_spikes(batch, self.n_units)
        out = np.zeros((ends.size + 1, self.n_units))
        out[0] = self._carry
        assert self._next_end is not None
        open_start = self._next_end - (ends.size + 1) * self.bin_len  # start of row 0
        count_bins(samples, units, open_start, self.bin_len, out)
        self._carry = out[-1].copy()
        return self._frame(out[:-1], ends, batch)

    def state_dict(self) -> dict[str, np.ndarray]:
        nxt = -1 if self._next_end is None else self._next_end
        return {"carry": self._carry.copy(), "next_end": np.array(nxt, np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._carry = np.asarray(state["carry"], np.float64).copy()
        nxt = int(state["next_end"])
        self._next_end = None if nxt < 0 else nxt


class ExponentialTraces(_Binned):
    """Spike batches in, per-unit exponential traces (Hz) at each completed bin end out."""

    def __init__(self, params: TraceFeaturesParams, n_units: int, sample_rate: float) -> None:
        self.params = params
        super().__init__(n_units, params.bin_ms, sample_rate)

    def reset(self) -> None:
        super().reset()
        self._value = np.zeros(self.n_units)
        self._last = np.zeros(self.n_units, dtype=np.int64)

    def process(self, batch: SpikeBatch) -> FeatureFrame:
        ends = self._ends(batch)
        samples, units = unit_spikes(batch, self.n_units)
        out = np.zeros((ends.size, self.n_units))
        tau = self.params.tau_ms * 1e-3 * self.sample_rate
        trace_bins(
            samples, units, self._value, self._last, tau, 1000.0 / self.params.tau_ms, ends, out
        )
        return self._frame(out, ends, batch)

    def state_dict(self) -> dict[str, np.ndarray]:
        nxt = -1 if self._next_end is None else self._next_end
        return {
            "value": self._value.copy(),
            "last": self._last.copy(),
            "next_end": np.array(nxt, np.int64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._value = np.asarray(state["value"], np.float64).copy()
        self._last = np.asarray(state["last"], np.int64).copy()
        nxt = int(state["next_end"])
        self._next_end = None if nxt < 0 else nxt


def make_features(
    params: CountFeaturesParams | TraceFeaturesParams, n_units: int, sample_rate: float
) -> BinnedCounts | ExponentialTraces:
    """The feature extractor that ``params.kind`` names."""
    if isinstance(params, CountFeaturesParams):
        return BinnedCounts(params, n_units, sample_rate)
    return ExponentialTraces(params, n_units, sample_rate)
