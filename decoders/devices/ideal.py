"""Ideal synapse: continuous weight, changes applied exactly, hard bounds."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from bci.schema import StrictModel
from bci.types import FloatArray, IntArray
from decoders.devices.base import SynapseDevice


class IdealParams(StrictModel):
    """An ideal (software) synapse: ``w += dw`` clipped to ``[w_min, w_max]``."""

    kind: Literal["ideal"] = "ideal"
    w_min: float = 0.0
    w_max: float = 1.0
    step: float = Field(0.01, gt=0, description="weight change of one pulse")
    max_pulses: int = Field(1_000_000, ge=1)


class IdealDevice(SynapseDevice):
    """Continuous weights; ``apply_change`` is exact, a pulse is ``step``."""

    kind: ClassVar[str] = "ideal"
    Params: ClassVar[type[StrictModel]] = IdealParams

    params: IdealParams

    @property
    def weights(self) -> FloatArray:
        return self._w

    def _set_weights(self, w: FloatArray) -> None:
        self._w = w

    @property
    def nominal_step(self) -> float:
        return float(self.params.step)

    def apply_change(self, dw: FloatArray) -> None:
        np.add(self._w, dw, out=self._w)
        np.clip(self._w, self.w_min, self.w_max, out=self._w)

    def apply_pulses(self, pulses: IntArray) -> None:
        self.apply_change(np.asarray(pulses * self.params.step, dtype=np.float64))
