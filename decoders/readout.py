"""Spiking readout: silicon-neuron style LIF output neurons behind plastic synapses.

Sorted units (``n_in``) drive ``n_out`` leaky integrate-and-fire neurons through the
weights of a :class:`~decoders.devices.base.SynapseDevice`; an optional
:class:`~decoders.plasticity.base.PlasticityRule` on that device learns from the input
spikes and the readout's own output spikes. Dimensionless membrane: rest 0, threshold
``v_th`` (1), reset ``v_reset``; each input spike adds ``weight * weight_scale`` to an
exponentially decaying synaptic current (``tau_syn_ms``); ``tau_m dv/dt = -v + I``,
integrated exactly per sample. The output spikes (``unit`` = output neuron) carry the
absolute sample index of the input sample that caused them, ready for a stimulation
policy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from bci.types import FloatArray, SpikeBatch, empty_spikes
from decoders.devices.base import SynapseDevice
from decoders.plasticity.base import PlasticityRule, unit_spikes


class ReadoutParams(StrictModel):
    """LIF output population of the spiking readout."""

    n_out: int = Field(4, ge=1, le=100_000)
    tau_m_ms: float = Field(20.0, gt=0)
    tau_syn_ms: float = Field(5.0, gt=0)
    v_th: float = Field(1.0, gt=0)
    v_reset: float = 0.0
    t_ref_ms: float = Field(2.0, ge=0)
    weight_scale: float = Field(1.0, gt=0, description="synaptic current per unit weight")


@njit(cache=True, nogil=True)
def readout_kernel(
    in_sample: np.ndarray,
    in_unit: np.ndarray,
    w: np.ndarray,
    scale: float,
    v: np.ndarray,
    i_syn: np.ndarray,
    refractory: np.ndarray,
    first_sample: int,
    n_samples: int,
    decay_m: float,
    decay_s: float,
    v_th: float,
    v_reset: float,
    ref_samples: int,
    out_sample: np.ndarray,
    out_unit: np.ndarray,
) -> int:
    """Advance the LIF outputs sample by sample; write output spikes; return their count."""
    n_out = v.size
    k = 0
    n_spk = 0
    for t in range(n_samples):
        s = first_sample + t
        while k < in_sample.size and in_sample[k] == s:
            u = in_unit[k]
            for j in range(n_out):
                i_syn[j] += scale * w[u, j]
            k += 1
        for j in range(n_out):
            if refractory[j] > 0:
                refractory[j] -= 1
                v[j] = v_reset
            else:
                v[j] = i_syn[j] + (v[j] - i_syn[j]) * decay_m
                if v[j] >= v_th and n_spk < out_sample.size:
                    out_sample[n_spk] = s
                    out_unit[n_spk] = j
                    n_spk += 1
                    v[j] = v_reset
                    refractory[j] = ref_samples
            i_syn[j] *= decay_s
    return n_spk


class SpikingReadout:
    """Sorted-unit spikes in, LIF output spikes out (:class:`~bci.types.SpikeBatch`).

    ``process(batch)`` consumes input spikes (``unit`` in ``0..n_in-1``), advances the
    output neurons over the batch's sample span, lets ``rule`` (if any) update the
    weights from input and output spikes, and returns the output spikes.
    """

    def __init__(
        self,
        params: ReadoutParams,
        n_in: int,
        device: SynapseDevice,
        sample_rate: float,
        rule: PlasticityRule | None = None,
    ) -> None:
        if device.shape != (n_in, params.n_out):
            raise ValueError(f"device shape {device.shape} != ({n_in}, {params.n_out})")
        if rule is not None and rule.device is not device:
            raise ValueError("the rule must act on the readout's device")
        self.params = params
        self.n_in = int(n_in)
        self.device = device
        self.rule = rule
        self.sample_rate = float(sample_rate)
        self.reset()

    def reset(self) -> None:
        n = self.params.n_out
        self.v = np.zeros(n)
        self.i_syn = np.zeros(n)
        self._refractory = np.zeros(n, dtype=np.int64)
        if self.rule is not None:
            self.rule.reset()

    @property
    def weights(self) -> FloatArray:
        return self.device.weights

    def process(self, batch: SpikeBatch) -> SpikeBatch:
        p = self.params
        samples, units = unit_spikes(batch, self.n_in)
        n_samples = batch.end_sample - batch.first_sample
        dt_ms = 1000.0 / self.sample_rate
        capacity = n_samples * p.n_out
        out_s = np.empty(capacity, np.int64)
        out_u = np.empty(capacity, np.int64)
        n = readout_kernel(
            samples, units, self.device.weights, p.weight_scale, self.v, self.i_syn,
            self._refractory, batch.first_sample, n_samples,
            math.exp(-dt_ms / p.tau_m_ms), math.exp(-dt_ms / p.tau_syn_ms),
            p.v_th, p.v_reset, round(p.t_ref_ms / dt_ms), out_s, out_u,
        )  # fmt: skip
        spikes = empty_spikes(n)
        spikes["sample"] = out_s[:n]
        spikes["unit"] = out_u[:n]
        spikes["channel"] = -1
        spikes["time"] = batch.timestamp + (out_s[:n] - batch.first_sample) / self.sample_rate
        out = SpikeBatch(
            spikes=spikes,
            first_sample=batch.first_sample,
            end_sample=batch.end_sample,
            timestamp=batch.timestamp,
            sample_rate=batch.sample_rate,
        )
        if self.rule is not None:
            self.rule.update(
                (samples, units), (out_s[:n], out_u[:n]), batch.first_sample, batch.end_sample
            )
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, Any] = {"v": self.v.copy(), "i_syn": self.i_syn.copy()}
        state["refractory"] = self._refractory.copy()
        if self.rule is not None:
            state.update(self.rule.state_dict())
        else:
            state.update({f"device.{k}": v for k, v in self.device.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.v = np.asarray(state["v"], np.float64).copy()
        self.i_syn = np.asarray(state["i_syn"], np.float64).copy()
        self._refractory = np.asarray(state["refractory"], np.int64).copy()
        if self.rule is not None:
            self.rule.load_state_dict(state)
        else:
            self.device.load_state_dict(
                {k[7:]: v for k, v in state.items() if k.startswith("device.")}
            )
