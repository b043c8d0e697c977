"""Metal-oxide (e.g. TiOx) memristor: voltage-dependent, bounded, non-linear switching.

The state is the resistance ``R`` in ohms between ``r_lo_ohm`` and ``r_hi_ohm``; with
``x = (R - r_lo) / (r_hi - r_lo)`` a pulse of amplitude ``V`` (volts) and width
``pulse_width_s`` changes it as (after the data-driven model of Messaris et al. 2018,
the devices of Serb et al. 2020)

* SET, ``V > v_th_set`` (lower resistance, potentiation):
  ``dx/dt = -k_set s(V) x**2``,
* RESET, ``V < -v_th_reset`` (higher resistance, depression):
  ``d(1-x)/dt = -k_reset s(V) (1-x)**2``,

with ``s(V) = exp((|V| - v_th) / v0) - 1`` (no change below threshold, exponential above).
Each pulse is integrated exactly (``x <- x / (1 + c x)``), so the state never leaves
``[r_lo, r_hi]`` and steps shrink as the bound nears. ``k`` varies device to device and
pulse to pulse (log-normal). The weight read-out is the conductance ``G = 1/R`` mapped
linearly from ``[1/r_hi, 1/r_lo]`` onto ``[w_min, w_max]``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from bci.schema import StrictModel
from bci.types import FloatArray, IntArray
from decoders.devices.base import SynapseDevice
from decoders.devices.pulsed import lognormal_sigma


class MemristorParams(StrictModel):
    """A metal-oxide memristor crossbar (resistance in Ω, pulse amplitude in V)."""

    kind: Literal["memristor"] = "memristor"
    w_min: float = 0.0
    w_max: float = 1.0
    r_lo_ohm: float = Field(5e3, gt=0, description="lowest reachable resistance")
    r_hi_ohm: float = Field(5e4, gt=0, description="highest reachable resistance")
    v_set: float = Field(1.0, gt=0, description="potentiating pulse amplitude, V")
    v_reset: float = Field(-1.2, lt=0, description="depressing pulse amplitude, V")
    v_th_set: float = Field(0.6, ge=0, description="SET threshold, V")
    v_th_reset: float = Field(0.8, ge=0, description="RESET threshold (magnitude), V")
    v0_set: float = Field(0.2, gt=0, description="voltage scale of SET speed-up, V")
    v0_reset: float = Field(0.2, gt=0, description="voltage scale of RESET speed-up, V")
    k_set_per_s: float = Field(1.25e4, gt=0)
    k_reset_per_s: float = Field(1.25e4, gt=0)
    pulse_width_s: float = Field(1e-6, gt=0)
    d2d_cv: float = Field(0.1, ge=0, le=2)
    c2c_cv: float = Field(0.2, ge=0, le=2)
    max_pulses: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> MemristorParams:
        if not self.w_min < self.w_max:
            raise ValueError("w_min must be below w_max")
        if not self.r_lo_ohm < self.r_hi_ohm:
            raise ValueError("r_lo_ohm must be below r_hi_ohm")
        return self

    def drive(self, voltage: float) -> float:
        """``k s(V) * width``: the per-pulse rate constant at amplitude ``voltage`` (V)."""
        if voltage >= 0:
            over, v0, k = voltage - self.v_th_set, self.v0_set, self.k_set_per_s
        else:
            over, v0, k = -voltage - self.v_th_reset, self.v0_reset, self.k_reset_per_s
        if over <= 0:
            return 0.0
        return k * (math.exp(over / v0) - 1.0) * self.pulse_width_s


@njit(cache=True, nogil=True)
def memristor_apply(
    x: np.ndarray,
    pulses: np.ndarray,
    a: np.ndarray,
    c_set: float,
    c_reset: float,
    c2c_sigma: float,
    normals: np.ndarray,
) -> None:
    """Apply signed pulses to normalised resistance states ``x`` (0 = r_lo, 1 = r_hi)."""
    n_pre, n_post = x.shape
    k = 0
    for i in range(n_pre):
        for j in range(n_post):
            n = pulses[i, j]
            if n == 0:
                continue
            count = n if n > 0 else -n
            s = x[i, j]
            for _ in range(count):
                m = a[i, j] * np.exp(c2c_sigma * normals[k] - 0.5 * c2c_sigma * c2c_sigma)
                k += 1
                if n > 0:  # SET: toward r_lo
                    s = s / (1.0 + c_set * m * s)
                else:  # RESET: toward r_hi
                    y = 1.0 - s
                    s = 1.0 - y / (1.0 + c_reset * m * y)
            x[i, j] = min(max(s, 0.0), 1.0)


class MemristorDevice(SynapseDevice):
    """Memristor crossbar; state :attr:`resistance_ohm`, read out as conductance weights."""

    kind: ClassVar[str] = "memristor"
    Params: ClassVar[type[StrictModel]] = MemristorParams

    params: MemristorParams

    def reset(self) -> None:
        """Initial weights again; the devices (their device-to-device factors) stay."""
        if not hasattr(self, "_a"):
            s = lognormal_sigma(self.params.d2d_cv)
            self._a = np.exp(s * self._rng.standard_normal(self.shape) - 0.5 * s * s)
        self._c_set = self.params.drive(self.params.v_set)
        self._c_reset = self.params.drive(self.params.v_reset)
        super().reset()

    def set_pulse_voltages(self, v_set: float, v_reset: float) -> None:
        """Change the programming amplitudes (V); larger pulses give larger steps."""
        self._c_set = self.params.drive(v_set)
        self._c_reset = self.params.drive(v_reset)

    @property
    def resistance_ohm(self) -> FloatArray:
        p = self.params
        return p.r_lo_ohm + self._x * (p.r_hi_ohm - p.r_lo_ohm)

    @property
    def conductance_s(self) -> FloatArray:
        return 1.0 / self.resistance_ohm

    def _g_range(self) -> tuple[float, float]:
        return 1.0 / self.params.r_hi_ohm, 1.0 / self.params.r_lo_ohm

    @property
    def weights(self) -> FloatArray:
        g_lo, g_hi = self._g_range()
        frac = (self.conductance_s - g_lo) / (g_hi - g_lo)
        w = self.w_min + (self.w_max - self.w_min) * frac
        return np.clip(w, self.w_min, self.w_max)

    def _set_weights(self, w: FloatArray) -> None:
        p = self.params
        g_lo, g_hi = self._g_range()
        g = g_lo + (w - self.w_min) / (self.w_max - self.w_min) * (g_hi - g_lo)
        self._x = np.clip((1.0 / g - p.r_lo_ohm) / (p.r_hi_ohm - p.r_lo_ohm), 0.0, 1.0)

    @property
    def nominal_step(self) -> float:
        """Weight change of one SET pulse from the middle of the weight range."""
        p = self.params
        g_lo, g_hi = self._g_range()
        g_mid = 0.5 * (g_lo + g_hi)
        x0 = (1.0 / g_mid - p.r_lo_ohm) / (p.r_hi_ohm - p.r_lo_ohm)
        x1 = x0 / (1.0 + self._c_set * x0)
        g1 = 1.0 / (p.r_lo_ohm + x1 * (p.r_hi_ohm - p.r_lo_ohm))
        step = (g1 - g_mid) / (g_hi - g_lo) * (self.w_max - self.w_min)
        return float(max(step, 1e-12))

    def apply_pulses(self, pulses: IntArray) -> None:
        total = int(np.abs(pulses).sum())
        normals = self._rng.standard_normal(total)
        memristor_apply(
            self._x,
            pulses,
            self._a,
            self._c_set,
            self._c_reset,
            lognormal_sigma(self.params.c2c_cv),
            normals,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "state_x": self._x.copy(),
            "residual": self._residual.copy(),
            "device_factor": self._a.copy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._x = np.asarray(state["state_x"], dtype=np.float64).copy()
        self._residual = np.asarray(state["residual"], dtype=np.float64).copy()
        self._a = np.asarray(state["device_factor"], dtype=np.float64).copy()
