"""Pair-based STDP, all-to-all or nearest-spike, additive or multiplicative.

For a presynaptic spike at ``t_pre`` and a postsynaptic one at ``t_post``
(``Δt = t_post - t_pre``) the weight changes by ``a_plus f+(w) exp(-Δt / tau_plus)``
when ``Δt > 0`` and by ``-a_minus f-(w) exp(Δt / tau_minus)`` when ``Δt < 0`` (no change
at ``Δt = 0``). ``additive``: ``f± = 1``; ``multiplicative`` (weight-dependent, van
Rossum et al. 2000 / Gütig et al. 2003 with ``mu = 1``): ``f+ = (w_max - w) / (w_max - w_min)``,
``f- = (w - w_min) / (w_max - w_min)``. ``all_to_all`` sums over every pair (traces
``x += 1``); ``nearest`` pairs each spike only with the latest one of the other side
(traces reset to 1; Morrison et al. 2008). Amplitudes in weight units, times in ms.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from decoders.plasticity.base import LazyTraces, PlasticityRule, Spikes, merge_events


class PairStdpParams(StrictModel):
    """Pair STDP (amplitudes in weight units per pair, time constants in ms)."""

    kind: Literal["pair_stdp"] = "pair_stdp"
    a_plus: float = Field(0.01, ge=0)
    a_minus: float = Field(0.0105, ge=0)
    tau_plus_ms: float = Field(20.0, gt=0)
    tau_minus_ms: float = Field(20.0, gt=0)
    pairing: Literal["all_to_all", "nearest"] = "all_to_all"
    weight_dependence: Literal["additive", "multiplicative"] = "additive"

    def window(
        self, lag_ms: float, w: float = 0.5, w_min: float = 0.0, w_max: float = 1.0
    ) -> float:
        """Analytic weight change of one isolated pair at ``lag_ms = t_post - t_pre``."""
        mult = self.weight_dependence == "multiplicative"
        span = w_max - w_min
        if lag_ms > 0:
            f = (w_max - w) / span if mult else 1.0
            return self.a_plus * f * math.exp(-lag_ms / self.tau_plus_ms)
        if lag_ms < 0:
            f = (w - w_min) / span if mult else 1.0
            return -self.a_minus * f * math.exp(lag_ms / self.tau_minus_ms)
        return 0.0


@njit(cache=True, nogil=True)
def pair_stdp_kernel(
    ev_sample: np.ndarray,
    ev_unit: np.ndarray,
    ev_post: np.ndarray,
    x_val: np.ndarray,
    x_last: np.ndarray,
    y_val: np.ndarray,
    y_last: np.ndarray,
    w: np.ndarray,
    dw: np.ndarray,
    a_plus: float,
    a_minus: float,
    tau_plus: float,
    tau_minus: float,
    multiplicative: bool,
    nearest: bool,
    w_min: float,
    w_max: float,
) -> None:
    """Accumulate pair-STDP changes into ``dw`` (taus in samples, events time-ordered).

    Events at the same sample see the traces from before that sample, so a
    simultaneous pre/post pair causes no change.
    """
    n_pre, n_post = w.shape
    span = w_max - w_min
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
                for i in range(n_pre):
                    x = x_val[i] * math.exp(-(s - x_last[i]) / tau_plus)
                    if x == 0.0:
                        continue
                    f = 1.0
                    if multiplicative:
                        f = max(w_max - (w[i, u] + dw[i, u]), 0.0) / span
                    dw[i, u] += a_plus * f * x
            else:
                for j in range(n_post):
                    y = y_val[j] * math.exp(-(s - y_last[j]) / tau_minus)
                    if y == 0.0:
                        continue
                    f = 1.0
                    if multiplicative:
                        f = max((w[u, j] + dw[u, j]) - w_min, 0.0) / span
                    dw[u, j] -= a_minus * f * y
        for k in range(g0, g1):
            u = ev_unit[k]
            if ev_post[k]:
                y_val[u] = (
                    1.0 if nearest else y_val[u] * math.exp(-(s - y_last[u]) / tau_minus) + 1.0
                )
                y_last[u] = s
            else:
                x_val[u] = (
                    1.0 if nearest else x_val[u] * math.exp(-(s - x_last[u]) / tau_plus) + 1.0
                )
                x_last[u] = s
        g0 = g1


class PairStdp(PlasticityRule):
    """Pair STDP on an ``(n_pre, n_post)`` device; changes applied once per chunk."""

    kind: ClassVar[str] = "pair_stdp"
    Params: ClassVar[type[StrictModel]] = PairStdpParams

    params: PairStdpParams

    def _reset_state(self) -> None:
        self._x = LazyTraces(self.n_pre)
        self._y = LazyTraces(self.n_post)

    def _update(self, pre: Spikes, post: Spikes, first_sample: int, end_sample: int) -> None:
        ev_s, ev_u, ev_post = merge_events(pre, post)
        if ev_s.size == 0:
            return
        p = self.params
        self._dw.fill(0.0)
        pair_stdp_kernel(
            ev_s,
            ev_u,
            ev_post,
            self._x.value,
            self._x.last,
            self._y.value,
            self._y.last,
            self.device.weights,
            self._dw,
            p.a_plus,
            p.a_minus,
            self.samples(p.tau_plus_ms),
            self.samples(p.tau_minus_ms),
            p.weight_dependence == "multiplicative",
            p.pairing == "nearest",
            self.device.w_min,
            self.device.w_max,
        )
        self.device.apply_change(self._dw)

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._x.state("x"), **self._y.state("y")}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._x.load(state, "x")
        self._y.load(state, "y")
