"""Izhikevich (2003) simple spiking model (current dimensionless, potential in mV).

``dv/dt = 0.04 v² + 5 v + 140 - u + I``, ``du/dt = a (b v - u)`` with ``t`` in ms; when
``v >= v_peak`` (30 mV) a spike is emitted and ``v <- c``, ``u <- u + d``. ``I`` is in the
model's native unit (the paper's dimensionless, "pA-like" unit: ``I = 10`` makes a
regular-spiking cell fire tonically).

Integration: forward Euler on ``v`` and ``u`` with the outer step split into
``ceil(dt / max_substep_ms)`` equal substeps (default ``max_substep_ms`` 0.1 ms). At the
rig's 30 kHz step (1/30 ms) that is one substep; at 1 ms it is ten. The fast direction
of the quadratic ``v`` equation has a time constant of a few ms below threshold, so
substeps of 0.1 ms keep Euler stable and accurate (the paper's 0.5 ms half-steps
distort bursting patterns); the upswing past threshold is cut at ``v_peak`` anyway.
The input is held constant over the outer step.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from acquisition.sim.neurons.base import NeuronModel, SynapseBlock, synaptic_current
from bci.schema import StrictModel
from bci.types import FloatArray, IntArray

#: ``(a, b, c, d)`` of the named cortical and thalamic cell classes (Izhikevich 2003, fig. 2).
IZHIKEVICH_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "regular_spiking": (0.02, 0.2, -65.0, 8.0),
    "intrinsically_bursting": (0.02, 0.2, -55.0, 4.0),
    "chattering": (0.02, 0.2, -50.0, 2.0),
    "fast_spiking": (0.1, 0.2, -65.0, 2.0),
    "low_threshold_spiking": (0.02, 0.25, -65.0, 2.0),
    "thalamo_cortical": (0.02, 0.25, -65.0, 0.05),
    "resonator": (0.1, 0.26, -65.0, 2.0),
}

IzhikevichPreset = Literal[
    "regular_spiking",
    "intrinsically_bursting",
    "chattering",
    "fast_spiking",
    "low_threshold_spiking",
    "thalamo_cortical",
    "resonator",
]


class IzhikevichParams(StrictModel):
    """Parameters of an Izhikevich population: a named ``preset`` of ``(a, b, c, d)``,
    any of which can be overridden. ``a`` in 1/ms, ``b`` dimensionless, ``c`` in mV,
    ``d`` in the model's current unit."""

    kind: Literal["izhikevich"] = "izhikevich"
    preset: IzhikevichPreset = "regular_spiking"
    a: float | None = Field(None, gt=0, description="recovery rate, 1/ms (default: preset)")
    b: float | None = Field(None, description="recovery sensitivity to v (default: preset)")
    c: float | None = Field(None, description="reset potential, mV (default: preset)")
    d: float | None = Field(None, description="recovery jump after a spike (default: preset)")
    v_peak_mv: float = Field(30.0, description="spike cut-off, mV")
    max_substep_ms: float = Field(0.1, gt=0, le=1.0, description="largest Euler substep, ms")

    def abcd(self) -> tuple[float, float, float, float]:
        """The effective ``(a, b, c, d)``: the preset with any overrides applied."""
        a, b, c, d = IZHIKEVICH_PRESETS[self.preset]
        return (
            a if self.a is None else self.a,
            b if self.b is None else self.b,
            c if self.c is None else self.c,
            d if self.d is None else self.d,
        )

    def resting_mv(self) -> float:
        """Stable resting potential without input (the lower root of the v-nullcline
        meeting ``u = b v``), or ``c`` when there is none."""
        _, b, c, _ = self.abcd()
        disc = (5.0 - b) ** 2 - 4.0 * 0.04 * 140.0
        if disc < 0:
            return c
        return (-(5.0 - b) - math.sqrt(disc)) / (2.0 * 0.04)


@njit(cache=True, nogil=True)
def izhikevich_advance(
    v: np.ndarray,
    u: np.ndarray,
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
    a: float,
    b: float,
    c: float,
    d: float,
    v_peak: float,
    dt: float,
    n_sub: int,
    spikes: np.ndarray,
) -> int:
    n_steps, n = i_ext.shape
    h = dt / n_sub
    k = 0
    for t in range(n_steps):
        for j in range(n):
            ge[j] = ge[j] * decay_e + ge_in[t, j]
            gi[j] = gi[j] * decay_i + gi_in[t, j]
            vj = v[j]
            uj = u[j]
            current = i_ext[t, j] + synaptic_current(ge[j], gi[j], vj, syn_mode, e_exc, e_inh)
            fired = False
            for _ in range(n_sub):
                dv = (0.04 * vj + 5.0) * vj + 140.0 - uj + current
                du = a * (b * vj - uj)
                vj += h * dv
                uj += h * du
                if vj >= v_peak:
                    vj = c
                    uj += d
                    fired = True
            v[j] = vj
            u[j] = uj
            if fired:
                spikes[k, 0] = t
                spikes[k, 1] = j
                k += 1
    return k


class IzhikevichModel(NeuronModel):
    """Izhikevich population; ``i_ext`` in the model's dimensionless unit, ``v`` in mV.

    ``default_drive`` 6: every preset fires tonically, the cortical ones at a few to tens
    of Hz (steady state: regular spiking 14 Hz, intrinsically bursting 18 Hz, chattering
    about 48 spikes/s in bursts, low-threshold 46 Hz, fast spiking 62 Hz; the barely
    adapting thalamo-cortical preset about 170 Hz, give it a lower ``drive.mean``). The
    rheobase is about 3.8, so with the ±10 % spread every cell stays above it.

    ``default_stim_gain`` 8 per µA: from rest (-70 mV for the cortical presets) a 200 µs
    pulse must push ``v`` past the unstable branch of the v-nullcline; with ``C = 1`` the
    jump is ``I * 0.2 ms``, and about 16 mV is needed, so a 20 µA pulse needs a gain of
    about 4 per µA (measured: 3.9 regular spiking and bursting, 4.0 fast spiking, 1.2
    low-threshold and thalamo-cortical). Twice the highest threshold means a 20 µA pulse
    fires cells out to about the response radius ``r0`` (60 µm) from rest.
    """

    kind: ClassVar[str] = "izhikevich"
    Params: ClassVar[type[StrictModel]] = IzhikevichParams
    current_unit: ClassVar[str] = "izhikevich units (dimensionless, pA-like)"
    default_drive: ClassVar[float] = 6.0
    default_stim_gain: ClassVar[float] = 8.0

    params: IzhikevichParams

    def reset(self) -> None:
        _, b, _, _ = self.params.abcd()
        v_rest = self.params.resting_mv()
        self._v = v_rest + self._rng.uniform(-1.0, 1.0, self.n)
        self._u = b * self._v

    @property
    def v(self) -> FloatArray:
        return self._v

    @property
    def u(self) -> FloatArray:
        """Recovery variable of each neuron (the model's current unit)."""
        return self._u

    def advance(self, i_ext: FloatArray, syn: SynapseBlock, dt_ms: float, spikes: IntArray) -> int:
        p = self.params
        a, b, c, d = p.abcd()
        n_sub = max(1, math.ceil(dt_ms / p.max_substep_ms - 1e-9))
        return int(
            izhikevich_advance(
                self._v,
                self._u,
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
                a,
                b,
                c,
                d,
                p.v_peak_mv,
                dt_ms,
                n_sub,
                spikes,
            )
        )
