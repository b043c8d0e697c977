"""Bounded pulsed device with soft bounds and device-to-device / cycle-to-cycle variability.

One potentiating pulse changes ``w`` by ``alpha_p * a_ij * (w_max - w) * m + e`` and one
depressing pulse by ``-alpha_d * a_ij * (w - w_min) * m + e`` (soft bounds: steps shrink
near the bound), where ``a_ij`` is a per-device factor drawn once (log-normal,
``d2d_cv``), ``m`` a per-pulse factor (log-normal, ``c2c_cv``) and ``e`` additive
write noise (normal, ``write_noise``); the result is clipped to ``[w_min, w_max]``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from bci.schema import StrictModel
from bci.types import FloatArray, IntArray
from decoders.devices.base import SynapseDevice


class PulsedParams(StrictModel):
    """A non-ideal pulsed synaptic device (weights dimensionless, ``[w_min, w_max]``)."""

    kind: Literal["pulsed"] = "pulsed"
    w_min: float = 0.0
    w_max: float = 1.0
    alpha_p: float = Field(0.05, gt=0, le=1, description="fraction of the gap per LTP pulse")
    alpha_d: float = Field(0.05, gt=0, le=1, description="fraction of the gap per LTD pulse")
    d2d_cv: float = Field(0.1, ge=0, le=2, description="device-to-device spread of the step")
    c2c_cv: float = Field(0.2, ge=0, le=2, description="cycle-to-cycle spread of the step")
    write_noise: float = Field(0.0, ge=0, description="additive noise per pulse, weight units")
    max_pulses: int = Field(20, ge=1, description="most pulses per synapse per update")

    @model_validator(mode="after")
    def _bounds(self) -> PulsedParams:
        if not self.w_min < self.w_max:
            raise ValueError("w_min must be below w_max")
        return self


@njit(cache=True, nogil=True)
def pulsed_apply(
    w: np.ndarray,
    pulses: np.ndarray,
    a: np.ndarray,
    alpha_p: float,
    alpha_d: float,
    w_min: float,
    w_max: float,
    c2c_sigma: float,
    write_noise: float,
    normals: np.ndarray,
) -> None:
    """Apply signed pulses one by one; ``normals`` holds two N(0,1) draws per pulse."""
    n_pre, n_post = w.shape
    k = 0
    for i in range(n_pre):
        for j in range(n_post):
            n = pulses[i, j]
            if n == 0:
                continue
            count = n if n > 0 else -n
            x = w[i, j]
            for _ in range(count):
                m = np.exp(c2c_sigma * normals[k] - 0.5 * c2c_sigma * c2c_sigma)
                frac = a[i, j] * m
                if frac > 1.0:
                    frac = 1.0
                if n > 0:
                    x += alpha_p * frac * (w_max - x)
                else:
                    x -= alpha_d * frac * (x - w_min)
                x += write_noise * normals[k + 1]
                if x < w_min:
                    x = w_min
                elif x > w_max:
                    x = w_max
                k += 2
            w[i, j] = x


def lognormal_sigma(cv: float) -> float:
    """σ of the log of a log-normal variable with mean 1 and coefficient of variation ``cv``."""
    return float(np.sqrt(np.log1p(cv * cv)))


class PulsedDevice(SynapseDevice):
    """Soft-bounded pulsed device with seeded device-to-device and cycle-to-cycle noise."""

    kind: ClassVar[str] = "pulsed"
    Params: ClassVar[type[StrictModel]] = PulsedParams

    params: PulsedParams

    def reset(self) -> None:
        """Initial weights again; the devices (their device-to-device factors) stay."""
        if not hasattr(self, "_a"):
            s = lognormal_sigma(self.params.d2d_cv)
            self._a = np.exp(s * self._rng.standard_normal(self.shape) - 0.5 * s * s)
        super().reset()

    @property
    def weights(self) -> FloatArray:
        return self._w

    def _set_weights(self, w: FloatArray) -> None:
        self._w = w

    @property
    def nominal_step(self) -> float:
        p = self.params
        return float(p.alpha_p * 0.5 * (p.w_max - p.w_min))

    def apply_pulses(self, pulses: IntArray) -> None:
        p = self.params
        total = int(np.abs(pulses).sum())
        normals = self._rng.standard_normal(2 * total)
        pulsed_apply(
            self._w,
            pulses,
            self._a,
            p.alpha_p,
            p.alpha_d,
            p.w_min,
            p.w_max,
            lognormal_sigma(p.c2c_cv),
            p.write_noise,
            normals,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["device_factor"] = self._a.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self._a = np.asarray(state["device_factor"], dtype=np.float64).copy()
