"""BCM rule with a sliding threshold (Bienenstock, Cooper and Munro 1982; Intrator-Cooper).

Pre and post rates ``x_i``, ``nu_j`` (Hz) are exponential spike traces (``tau_rate_ms``).
Once per chunk of duration ``dt`` (s): ``dw_ij = eta dt x_i nu_j (nu_j - theta_j)`` and
``theta_j += dt / tau_theta (nu_j**2 / target_hz - theta_j)``: the threshold slides up
when the neuron fires above ``target_hz``, so activity is self-stabilising.
``eta`` is in weight units per Hz³ per s. Keep chunks short (≤ 10 ms) next to
``tau_rate_ms``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from decoders.plasticity.base import LazyTraces, PlasticityRule, Spikes
from decoders.plasticity.traces import trace_add_spikes, trace_at


class BcmParams(StrictModel):
    """BCM with sliding threshold."""

    kind: Literal["bcm"] = "bcm"
    eta: float = Field(1e-6, ge=0, description="learning rate, weight / (Hz^3 s)")
    tau_rate_ms: float = Field(200.0, gt=0)
    tau_theta_ms: float = Field(5000.0, gt=0)
    target_hz: float = Field(10.0, gt=0)


@njit(cache=True, nogil=True)
def bcm_kernel(
    x: np.ndarray,
    nu: np.ndarray,
    theta: np.ndarray,
    dw: np.ndarray,
    eta: float,
    dt: float,
    tau_theta: float,
    target: float,
) -> None:
    """One chunk of BCM: weight changes into ``dw`` and the threshold update (s, Hz)."""
    n_pre, n_post = dw.shape
    for j in range(n_post):
        phi = nu[j] * (nu[j] - theta[j])
        for i in range(n_pre):
            dw[i, j] = eta * dt * x[i] * phi
        theta[j] += dt / tau_theta * (nu[j] * nu[j] / target - theta[j])


class Bcm(PlasticityRule):
    """BCM on an ``(n_pre, n_post)`` device; the threshold of each post unit slides."""

    kind: ClassVar[str] = "bcm"
    Params: ClassVar[type[StrictModel]] = BcmParams

    params: BcmParams

    def _reset_state(self) -> None:
        self._x = LazyTraces(self.n_pre)
        self._nu = LazyTraces(self.n_post)
        self.theta = np.full(self.n_post, float(self.params.target_hz))
        self._x_now = np.zeros(self.n_pre)
        self._nu_now = np.zeros(self.n_post)

    def _update(self, pre: Spikes, post: Spikes, first_sample: int, end_sample: int) -> None:
        p = self.params
        tau = self.samples(p.tau_rate_ms)
        inc = 1000.0 / p.tau_rate_ms  # a trace of rate r Hz averages r
        trace_add_spikes(pre[0], pre[1], self._x.value, self._x.last, tau, inc)
        trace_add_spikes(post[0], post[1], self._nu.value, self._nu.last, tau, inc)
        trace_at(self._x.value, self._x.last, tau, end_sample, self._x_now)
        trace_at(self._nu.value, self._nu.last, tau, end_sample, self._nu_now)
        dt = (end_sample - first_sample) / self.sample_rate
        bcm_kernel(
            self._x_now, self._nu_now, self.theta, self._dw, p.eta, dt,
            p.tau_theta_ms * 1e-3, p.target_hz,
        )  # fmt: skip
        self.device.apply_change(self._dw)

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._x.state("x"), **self._nu.state("nu"), "theta": self.theta.copy()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._x.load(state, "x")
        self._nu.load(state, "nu")
        self.theta = np.asarray(state["theta"], np.float64).copy()
