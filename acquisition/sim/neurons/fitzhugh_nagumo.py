"""FitzHugh-Nagumo model (dimensionless ``v``, ``w`` and current; time scale in ms).

``dv/ds = v - v³/3 - w + I``, ``ε⁻¹ dw/ds = v + a - b w`` in model time ``s = t /
time_scale_ms``. With the classic ``a = 0.7``, ``b = 0.8``, ``ε = 0.08`` the rest state
(``v ≈ -1.2``) loses stability at ``I ≈ 0.34`` and the model fires repetitively (a relaxation
oscillation) up to ``I ≈ 1.4``. A spike is the upward crossing of ``v_spike`` (1.0); the
detector re-arms once ``v`` falls below ``v_rearm`` (0.0).

Integration: forward Euler in model time with the outer step split into substeps of at
most 0.05 model units (one substep at 30 kHz with the default 1 ms time scale, twenty
at 1 ms); Euler on the cubic is stable for steps well below 0.5 model units.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from acquisition.sim.neurons.base import NeuronModel, SynapseBlock
from bci.schema import StrictModel
from bci.types import FloatArray, IntArray

#: Largest Euler substep in model time units.
MAX_SUBSTEP = 0.05


class FitzHughNagumoParams(StrictModel):
    """Parameters of a FitzHugh-Nagumo population (dimensionless except the time scale)."""

    kind: Literal["fitzhugh_nagumo"] = "fitzhugh_nagumo"
    a: float = Field(0.7, description="recovery offset")
    b: float = Field(0.8, ge=0, description="recovery self-coupling")
    epsilon: float = Field(0.08, gt=0, le=1, description="recovery rate (time-scale ratio)")
    time_scale_ms: float = Field(1.0, gt=0, description="ms per model time unit")
    v_spike: float = Field(1.0, description="spike when v crosses this upwards")
    v_rearm: float = Field(0.0, description="detector re-arms below this")

    @model_validator(mode="after")
    def _detector(self) -> FitzHughNagumoParams:
        if not self.v_rearm < self.v_spike:
            raise ValueError("v_rearm must be below v_spike")
        return self

    def resting_state(self) -> tuple[float, float]:
        """``(v, w)`` of the lowest fixed point without input."""
        # v - v³/3 - (v + a)/b = 0 (for b = 0 the fixed point is v = -a).
        if self.b == 0:
            v = -self.a
            return v, v - v**3 / 3.0
        roots = np.roots([-1.0 / 3.0, 0.0, 1.0 - 1.0 / self.b, -self.a / self.b])
        v = float(min(r.real for r in roots if abs(r.imag) < 1e-9))
        return v, (v + self.a) / self.b


@njit(cache=True, nogil=True)
def fhn_advance(
    v: np.ndarray,
    w: np.ndarray,
    armed: np.ndarray,
    i_ext: np.ndarray,
    ge: np.ndarray,
    gi: np.ndarray,
    ge_in: np.ndarray,
    gi_in: np.ndarray,
    decay_e: float,
    decay_i: float,
    a: float,
    b: float,
    epsilon: float,
    v_spike: float,
    v_rearm: float,
    ds: float,
    n_sub: int,
    spikes: np.ndarray,
) -> int:
    n_steps, n = i_ext.shape
    h = ds / n_sub
    k = 0
    for t in range(n_steps):
        for j in range(n):
            ge[j] = ge[j] * decay_e + ge_in[t, j]
            gi[j] = gi[j] * decay_i + gi_in[t, j]
            current = i_ext[t, j] + ge[j] - gi[j]
            vj = v[j]
            wj = w[j]
            fired = False
            for _ in range(n_sub):
                dv = vj - vj * vj * vj / 3.0 - wj + current
                dw = epsilon * (vj + a - b * wj)
                vj += h * dv
                wj += h * dw
                if armed[j]:
                    if vj >= v_spike:
                        armed[j] = False
                        fired = True
                elif vj < v_rearm:
                    armed[j] = True
            v[j] = vj
            w[j] = wj
            if fired:
                spikes[k, 0] = t
                spikes[k, 1] = j
                k += 1
    return k


class FitzHughNagumoModel(NeuronModel):
    """FitzHugh-Nagumo population; ``i_ext`` and ``v`` dimensionless; synapses are
    current-based only (weights in the same dimensionless unit).

    ``default_drive`` 0.5: a relaxation oscillation of about 38 model time units, i.e.
    about 26 Hz at the default 1 ms time scale; the ±10 % spread keeps every cell in the
    oscillating range (0.34 to 1.4).

    ``default_stim_gain`` 0.3 per µA: from rest (``v ≈ -1.2``) a 200 µs pulse (0.2 model
    units at the default time scale) fires when it lifts ``v`` by about 0.56 towards the
    middle branch of the cubic, i.e. a pulse of about 2.8, so a 20 µA pulse needs a gain
    of about 0.14 per µA (measured). Twice that threshold means a 20 µA pulse fires cells
    out to about the response radius ``r0`` (60 µm) from rest. For another
    ``time_scale_ms`` the pulse is shorter or longer in model time: scale ``stim_gain``
    inversely.
    """

    kind: ClassVar[str] = "fitzhugh_nagumo"
    Params: ClassVar[type[StrictModel]] = FitzHughNagumoParams
    current_unit: ClassVar[str] = "dimensionless"
    default_drive: ClassVar[float] = 0.5
    default_stim_gain: ClassVar[float] = 0.3
    voltage_in_mv: ClassVar[bool] = False

    params: FitzHughNagumoParams

    def reset(self) -> None:
        v_rest, w_rest = self.params.resting_state()
        self._v = v_rest + self._rng.uniform(-0.02, 0.02, self.n)
        self._w = np.full(self.n, w_rest)
        self._armed = np.ones(self.n, dtype=np.bool_)

    @property
    def v(self) -> FloatArray:
        return self._v

    @property
    def w(self) -> FloatArray:
        """Recovery variable of each neuron (dimensionless)."""
        return self._w

    def advance(self, i_ext: FloatArray, syn: SynapseBlock, dt_ms: float, spikes: IntArray) -> int:
        p = self.params
        ds = dt_ms / p.time_scale_ms
        n_sub = max(1, math.ceil(ds / MAX_SUBSTEP - 1e-9))
        return int(
            fhn_advance(
                self._v,
                self._w,
                self._armed,
                i_ext,
                syn.ge,
                syn.gi,
                syn.ge_in,
                syn.gi_in,
                syn.decay_e,
                syn.decay_i,
                p.a,
                p.b,
                p.epsilon,
                p.v_spike,
                p.v_rearm,
                ds,
                n_sub,
                spikes,
            )
        )
