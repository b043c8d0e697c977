"""Leaky integrate-and-fire neuron (current in pA, potential in mV).

``C dV/dt = -(C/tau_m)(V - E_L) + I``; spike and reset when ``V >= V_th``, then an
absolute refractory period. Integrated exactly for input held constant over a step
(exponential Euler), so the f-I curve follows the analytic formula
``f = 1 / (t_ref + tau_m ln((R I + E_L - V_reset) / (R I + E_L - V_th)))`` with
``R = tau_m / C``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from acquisition.sim.neurons.base import NeuronModel, SynapseBlock, synaptic_current
from bci.schema import StrictModel
from bci.types import FloatArray, IntArray


class LifParams(StrictModel):
    """Parameters of a leaky integrate-and-fire population."""

    kind: Literal["lif"] = "lif"
    c_m_pf: float = Field(250.0, gt=0, description="membrane capacitance, pF")
    tau_m_ms: float = Field(20.0, gt=0, description="membrane time constant, ms")
    e_l_mv: float = Field(-70.0, description="resting potential, mV")
    v_th_mv: float = Field(-50.0, description="threshold, mV")
    v_reset_mv: float = Field(-65.0, description="reset potential, mV")
    t_ref_ms: float = Field(2.0, ge=0, description="absolute refractory period, ms")

    @model_validator(mode="after")
    def _ordering(self) -> LifParams:
        if not self.v_reset_mv < self.v_th_mv:
            raise ValueError("v_reset_mv must be below v_th_mv")
        return self

    def rate_hz(self, current_pa: float) -> float:
        """Analytic firing rate (Hz) for a constant current (pA)."""
        r_mohm = self.tau_m_ms / self.c_m_pf * 1000.0  # ms/pF = GΩ -> MΩ
        v_inf = self.e_l_mv + r_mohm * current_pa * 1e-3  # MΩ * pA = µV -> mV
        if v_inf <= self.v_th_mv:
            return 0.0
        period = self.t_ref_ms + self.tau_m_ms * math.log(
            (v_inf - self.v_reset_mv) / (v_inf - self.v_th_mv)
        )
        return 1000.0 / period


@njit(cache=True, nogil=True)
def lif_advance(
    v: np.ndarray,
    refractory: np.ndarray,
    i_ext: np.ndarray,
    ge: np.ndarray,
    gi: np.ndarray,
    ge_in: np.ndarray,
    gi_in: np.ndarray,
    decay_e: float,
    decay_i: float,
    syn_mode: int,
    e_exc: float,
    e_inh: float,
    c_m: float,
    tau_m: float,
    e_l: float,
    v_th: float,
    v_reset: float,
    t_ref: float,
    dt: float,
    spikes: np.ndarray,
) -> int:
    n_steps, n = i_ext.shape
    decay_m = math.exp(-dt / tau_m)
    r = tau_m / c_m  # mV per pA
    k = 0
    for t in range(n_steps):
        for j in range(n):
            ge[j] = ge[j] * decay_e + ge_in[t, j]
            gi[j] = gi[j] * decay_i + gi_in[t, j]
            if refractory[j] > 0.0:
                refractory[j] -= dt
                continue
            current = i_ext[t, j] + synaptic_current(ge[j], gi[j], v[j], syn_mode, e_exc, e_inh)
            v_inf = e_l + r * current
            v[j] = v_inf + (v[j] - v_inf) * decay_m
            if v[j] >= v_th:
                v[j] = v_reset
                refractory[j] = t_ref
                spikes[k, 0] = t
                spikes[k, 1] = j
                k += 1
    return k


class LifModel(NeuronModel):
    """Leaky integrate-and-fire population; ``i_ext`` in pA, ``v`` in mV.

    ``default_drive`` 400 pA: ``V_inf`` -38 mV, tonic firing at about 55 Hz with the
    default parameters; the rheobase is 250 pA, so with the ±10 % drive spread only
    cells 3.75 standard deviations below the mean stay silent (300 pA silenced 5 %).

    ``default_stim_gain`` 2500 pA per µA: from rest a 200 µs pulse must lift ``V`` by
    ``V_th - E_L`` = 20 mV, i.e. deposit ``20 mV * 250 pF`` = 5 pC, so a 20 µA pulse needs
    a gain of about 1250 pA per µA (the leak loses 0.5 % over 0.2 ms). Twice that
    threshold means a 20 µA pulse fires cells out to about the response radius ``r0``
    (60 µm) from rest.
    """

    kind: ClassVar[str] = "lif"
    Params: ClassVar[type[StrictModel]] = LifParams
    current_unit: ClassVar[str] = "pA"
    default_drive: ClassVar[float] = 400.0
    default_stim_gain: ClassVar[float] = 2500.0

    params: LifParams

    def reset(self) -> None:
        p = self.params
        self._v = self._rng.uniform(p.v_reset_mv, p.v_th_mv, self.n)
        self._refractory = np.zeros(self.n)

    @property
    def v(self) -> FloatArray:
        return self._v

    def advance(self, i_ext: FloatArray, syn: SynapseBlock, dt_ms: float, spikes: IntArray) -> int:
        p = self.params
        return int(
            lif_advance(
                self._v,
                self._refractory,
                i_ext,
                syn.ge,
                syn.gi,
                syn.ge_in,
                syn.gi_in,
                syn.decay_e,
                syn.decay_i,
                syn.mode,
                syn.e_exc,
                syn.e_inh,
                p.c_m_pf,
                p.tau_m_ms,
                p.e_l_mv,
                p.v_th_mv,
                p.v_reset_mv,
                p.t_ref_ms,
                dt_ms,
                spikes,
            )
        )
