"""Triplet STDP (Pfister and Gerstner 2006, minimal all-to-all model).

Presynaptic traces ``r1`` (``tau_plus``) and ``r2`` (``tau_x``), postsynaptic traces
``o1`` (``tau_minus``) and ``o2`` (``tau_y``), each ``+1`` per spike. At a post spike
``w += r1 (a2_plus + a3_plus o2)``; at a pre spike ``w -= o1 (a2_minus + a3_minus r2)``,
with ``o2`` and ``r2`` taken just before the spike. Defaults are NEST's
``stdp_triplet_synapse`` defaults (Pfister and Gerstner's visual-cortex all-to-all fit,
weights in NEST's units, ``Wmax`` 100); NEST takes ``tau_minus`` and ``tau_y`` from the
postsynaptic neuron, so their defaults here are the paper's values (33.7 ms, 125 ms).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from decoders.plasticity.base import LazyTraces, PlasticityRule, Spikes, merge_events


class TripletStdpParams(StrictModel):
    """Triplet STDP (amplitudes in weight units, time constants in ms)."""

    kind: Literal["triplet_stdp"] = "triplet_stdp"
    a2_plus: float = Field(5e-10, ge=0, description="NEST Aplus")
    a3_plus: float = Field(6.2e-3, ge=0, description="NEST Aplus_triplet")
    a2_minus: float = Field(7e-3, ge=0, description="NEST Aminus")
    a3_minus: float = Field(2.3e-4, ge=0, description="NEST Aminus_triplet")
    tau_plus_ms: float = Field(16.8, gt=0, description="NEST tau_plus")
    tau_x_ms: float = Field(101.0, gt=0, description="NEST tau_plus_triplet")
    tau_minus_ms: float = Field(33.7, gt=0, description="postsynaptic tau_minus")
    tau_y_ms: float = Field(125.0, gt=0, description="postsynaptic tau_minus_triplet")


@njit(cache=True, nogil=True)
def triplet_stdp_kernel(
    ev_sample: np.ndarray,
    ev_unit: np.ndarray,
    ev_post: np.ndarray,
    r1: np.ndarray,
    r2: np.ndarray,
    pre_last: np.ndarray,
    o1: np.ndarray,
    o2: np.ndarray,
    post_last: np.ndarray,
    dw: np.ndarray,
    a2p: float,
    a3p: float,
    a2m: float,
    a3m: float,
    tau_plus: float,
    tau_x: float,
    tau_minus: float,
    tau_y: float,
) -> None:
    """Accumulate triplet-STDP changes into ``dw`` (taus in samples, events time-ordered)."""
    n_pre, n_post = dw.shape
    n_ev = ev_sample.size
    g0 = 0
    while g0 < n_ev:
        s = ev_sample[g0]
        g1 = g0
        while g1 < n_ev and ev_sample[g1] == s:
            g1 += 1
        for k in range(g0, g1):
            u = ev_unit[k]
            if ev_post[k]:
                o2_now = o2[u] * math.exp(-(s - post_last[u]) / tau_y)
                amp = a2p + a3p * o2_now
                for i in range(n_pre):
                    dw[i, u] += r1[i] * math.exp(-(s - pre_last[i]) / tau_plus) * amp
            else:
                r2_now = r2[u] * math.exp(-(s - pre_last[u]) / tau_x)
                amp = a2m + a3m * r2_now
                for j in range(n_post):
                    dw[u, j] -= o1[j] * math.exp(-(s - post_last[j]) / tau_minus) * amp
        for k in range(g0, g1):
            u = ev_unit[k]
            if ev_post[k]:
                dt = s - post_last[u]
                o1[u] = o1[u] * math.exp(-dt / tau_minus) + 1.0
                o2[u] = o2[u] * math.exp(-dt / tau_y) + 1.0
                post_last[u] = s
            else:
                dt = s - pre_last[u]
                r1[u] = r1[u] * math.exp(-dt / tau_plus) + 1.0
                r2[u] = r2[u] * math.exp(-dt / tau_x) + 1.0
                pre_last[u] = s
        g0 = g1


class TripletStdp(PlasticityRule):
    """Triplet STDP on an ``(n_pre, n_post)`` device; changes applied once per chunk."""

    kind: ClassVar[str] = "triplet_stdp"
    Params: ClassVar[type[StrictModel]] = TripletStdpParams

    params: TripletStdpParams

    def _reset_state(self) -> None:
        self._r1 = LazyTraces(self.n_pre)
        self._r2 = np.zeros(self.n_pre)
        self._o1 = LazyTraces(self.n_post)
        self._o2 = np.zeros(self.n_post)

    def _update(self, pre: Spikes, post: Spikes, first_sample: int, end_sample: int) -> None:
        ev_s, ev_u, ev_post = merge_events(pre, post)
        if ev_s.size == 0:
            return
        p = self.params
        self._dw.fill(0.0)
        triplet_stdp_kernel(
            ev_s,
            ev_u,
            ev_post,
            self._r1.value,
            self._r2,
            self._r1.last,
            self._o1.value,
            self._o2,
            self._o1.last,
            self._dw,
            p.a2_plus,
            p.a3_plus,
            p.a2_minus,
            p.a3_minus,
            self.samples(p.tau_plus_ms),
            self.samples(p.tau_x_ms),
            self.samples(p.tau_minus_ms),
            self.samples(p.tau_y_ms),
        )
        self.device.apply_change(self._dw)

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._r1.state("r1"), **self._o1.state("o1"), "r2": self._r2, "o2": self._o2}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._r1.load(state, "r1")
        self._o1.load(state, "o1")
        self._r2 = np.asarray(state["r2"], np.float64).copy()
        self._o2 = np.asarray(state["o2"], np.float64).copy()
