"""The interface every plasticity rule implements, and the spike-event helpers.

A rule owns a :class:`~decoders.devices.base.SynapseDevice` holding the
``(n_pre, n_post)`` weight matrix and updates it chunk by chunk from spike times:
absolute sample indices plus the sample rate (Hz), so a chunk boundary never changes
the result. Traces decay exactly between events (``exp(-Δsamples / tau)``).
Spikes of units outside ``[0, n)`` are ignored. Kernels are plain
``@njit(cache=True, nogil=True)`` functions in the rule files; classes only hold state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from bci.schema import StrictModel
from bci.types import FloatArray, SpikeBatch
from decoders.devices.base import SynapseDevice

#: Spikes of one population: ``(samples, units)`` int64 arrays, time-ordered.
Spikes = tuple[np.ndarray, np.ndarray]


def unit_spikes(batch: SpikeBatch | None, n_units: int) -> Spikes:
    """``(samples, units)`` of the batch's spikes of units ``0..n_units-1``, time-ordered."""
    if batch is None or len(batch) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s = batch.spikes
    keep = (s["unit"] >= 0) & (s["unit"] < n_units)
    samples = s["sample"][keep].astype(np.int64)
    units = s["unit"][keep].astype(np.int64)
    order = np.argsort(samples, kind="stable")
    return samples[order], units[order]


def merge_events(pre: Spikes, post: Spikes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pre and post spikes as one time-ordered event list ``(sample, unit, is_post)``."""
    samples = np.concatenate([pre[0], post[0]])
    units = np.concatenate([pre[1], post[1]])
    is_post = np.concatenate([np.zeros(pre[0].size, np.int8), np.ones(post[0].size, np.int8)])
    order = np.argsort(samples, kind="stable")
    return samples[order], units[order], is_post[order]


class PlasticityRule(ABC):
    """An online plasticity rule on the synapses from ``n_pre`` to ``n_post`` units.

    Consumes pre- and postsynaptic :class:`~bci.types.SpikeBatch` es covering the same
    sample span (units are indices into the pre / post populations); produces the
    updated weights (``device.weights``, ``(n_pre, n_post)``). Subclasses set ``kind``
    and ``Params`` and implement :meth:`_update`, :meth:`_reset_state` and the state I/O.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[StrictModel]]
    _start: int | None

    def __init__(
        self, params: Any, n_pre: int, n_post: int, device: SynapseDevice, sample_rate: float
    ) -> None:
        if device.shape != (n_pre, n_post):
            raise ValueError(f"device shape {device.shape} != ({n_pre}, {n_post})")
        self.params = params
        self.n_pre = int(n_pre)
        self.n_post = int(n_post)
        self.device = device
        self.sample_rate = float(sample_rate)
        self._dw = np.zeros((self.n_pre, self.n_post))
        self.reset()

    def samples(self, ms: float) -> float:
        """A duration in ms as a (fractional) number of samples."""
        return ms * 1e-3 * self.sample_rate

    @property
    def weights(self) -> FloatArray:
        return self.device.weights

    def process(self, pre: SpikeBatch, post: SpikeBatch | None = None) -> FloatArray:
        """Update the weights with one chunk of pre- (and post-) synaptic spikes."""
        if post is not None and (post.first_sample, post.end_sample) != (
            pre.first_sample,
            pre.end_sample,
        ):
            raise ValueError("pre and post batches must cover the same samples")
        self.update(
            unit_spikes(pre, self.n_pre),
            unit_spikes(post, self.n_post),
            pre.first_sample,
            pre.end_sample,
        )
        return self.device.weights

    def update(
        self,
        pre: Spikes,
        post: Spikes,
        first_sample: int,
        end_sample: int,
    ) -> None:
        """Like :meth:`process` with ``(samples, units)`` arrays (time-ordered)."""
        if self._start is None:
            self._start = int(first_sample)
        self._update(pre, post, int(first_sample), int(end_sample))

    @abstractmethod
    def _update(
        self,
        pre: Spikes,
        post: Spikes,
        first_sample: int,
        end_sample: int,
    ) -> None:
        """Advance the rule over ``[first_sample, end_sample)`` and update the device."""

    def reset(self) -> None:
        """Forget every trace (the device weights are reset separately)."""
        self._start = None
        self._reset_state()

    @abstractmethod
    def _reset_state(self) -> None: ...

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """Traces and device state, for checkpoints (keys ``rule.*`` and ``device.*``)."""
        out = {f"rule.{k}": v for k, v in self._state().items()}
        out.update({f"device.{k}": v for k, v in self.device.state_dict().items()})
        out["rule.start"] = np.array(-1 if self._start is None else self._start, np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._load_state({k[5:]: v for k, v in state.items() if k.startswith("rule.")})
        self.device.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("device.")})
        start = int(state["rule.start"])
        self._start = None if start < 0 else start


class LazyTraces:
    """Exponential traces stored as (value, sample of last update) per unit."""

    def __init__(self, n: int) -> None:
        self.value = np.zeros(n)
        self.last = np.zeros(n, dtype=np.int64)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_value": self.value.copy(), f"{prefix}_last": self.last.copy()}

    def load(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.value = np.asarray(state[f"{prefix}_value"], np.float64).copy()
        self.last = np.asarray(state[f"{prefix}_last"], np.int64).copy()
