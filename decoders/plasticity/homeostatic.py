"""Homeostatic synaptic scaling toward a target rate (Turrigiano et al. 1998; van Rossum 2000).

Each post unit's rate ``nu_j`` (Hz) is an exponential spike trace (``tau_rate_ms``);
once per chunk of duration ``dt`` (s) all its input weights scale multiplicatively:
``dw_ij = eta dt w_ij (target_hz - nu_j) / target_hz`` (``eta`` per s): up when the
unit fires too little, down when too much.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from decoders.plasticity.base import LazyTraces, PlasticityRule, Spikes
from decoders.plasticity.traces import trace_add_spikes, trace_at


class HomeostaticParams(StrictModel):
    """Multiplicative synaptic scaling."""

    kind: Literal["homeostatic"] = "homeostatic"
    eta: float = Field(0.1, ge=0, description="scaling rate, 1/s")
    target_hz: float = Field(10.0, gt=0)
    tau_rate_ms: float = Field(1000.0, gt=0)


@njit(cache=True, nogil=True)
def scaling_kernel(
    w: np.ndarray, nu: np.ndarray, dw: np.ndarray, eta: float, dt: float, target: float
) -> None:
    """Weight changes of one chunk of synaptic scaling into ``dw``."""
    n_pre, n_post = w.shape
    for j in range(n_post):
        g = eta * dt * (target - nu[j]) / target
        for i in range(n_pre):
            dw[i, j] = g * w[i, j]


class HomeostaticScaling(PlasticityRule):
    """Synaptic scaling of every post unit's inputs toward ``target_hz``."""

    kind: ClassVar[str] = "homeostatic"
    Params: ClassVar[type[StrictModel]] = HomeostaticParams

    params: HomeostaticParams

    def _reset_state(self) -> None:
        self._nu = LazyTraces(self.n_post)
        self._nu_now = np.zeros(self.n_post)

    def rate_hz(self, at_sample: int) -> np.ndarray:
        """Current rate estimate of every post unit (Hz) at ``at_sample``."""
        out = np.zeros(self.n_post)
        tau = self.samples(self.params.tau_rate_ms)
        trace_at(self._nu.value, self._nu.last, tau, at_sample, out)
        return out

    def _update(self, pre: Spikes, post: Spikes, first_sample: int, end_sample: int) -> None:
        p = self.params
        tau = self.samples(p.tau_rate_ms)
        trace_add_spikes(
            post[0], post[1], self._nu.value, self._nu.last, tau, 1000.0 / p.tau_rate_ms
        )
        trace_at(self._nu.value, self._nu.last, tau, end_sample, self._nu_now)
        dt = (end_sample - first_sample) / self.sample_rate
        scaling_kernel(self.device.weights, self._nu_now, self._dw, p.eta, dt, p.target_hz)
        self.device.apply_change(self._dw)

    def _state(self) -> dict[str, np.ndarray]:
        return self._nu.state("nu")

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._nu.load(state, "nu")
