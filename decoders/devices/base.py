"""The interface every synapse device implements.

A plasticity rule decides the *direction and number* of update pulses; the device
decides what a pulse does to the stored weight. Rules that compute a continuous
change ``dw`` (STDP, BCM, scaling) call :meth:`SynapseDevice.apply_change`, which
turns ``dw`` into a signed pulse count per synapse (``dw / nominal_step``, the
remainder carried to the next update) and calls :meth:`SynapseDevice.apply_pulses`.
Rules that think in pulses (the Serb et al. 2020 rate rule) call ``apply_pulses``
directly. The ideal device overrides ``apply_change`` to apply ``dw`` exactly.

Weights are ``(n_pre, n_post)`` float64 in the range ``[w_min, w_max]`` of the
device's parameters; devices with a physical state (a memristor's resistance in
ohms) expose it besides the weight read-out. Randomness comes only from the
``numpy.random.Generator`` passed in (no global RNG), so a run is reproducible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from numba import njit

from bci.schema import StrictModel
from bci.types import FloatArray, IntArray


@njit(cache=True, nogil=True)
def pulses_from_change(
    dw: np.ndarray, residual: np.ndarray, step: float, max_pulses: int, pulses: np.ndarray
) -> None:
    """Signed pulse counts for a requested change ``dw``; the remainder stays in ``residual``."""
    flat_dw = dw.ravel()
    flat_res = residual.ravel()
    flat_p = pulses.ravel()
    for k in range(flat_dw.size):
        r = flat_res[k] + flat_dw[k] / step
        n = int(r)  # truncation toward zero
        if n > max_pulses:
            n = max_pulses
            r = float(max_pulses)
        elif n < -max_pulses:
            n = -max_pulses
            r = float(-max_pulses)
        flat_p[k] = n
        flat_res[k] = r - n


class SynapseDevice(ABC):
    """A matrix of synapses stored on one kind of device.

    Consumes signed pulse counts (or continuous weight changes), holds the state,
    produces the weight read-out :attr:`weights` (``(n_pre, n_post)``, float64).
    Subclasses set ``kind`` and ``Params`` (a model with ``kind``, ``w_min``, ``w_max``,
    ``max_pulses``).
    """

    kind: ClassVar[str]
    Params: ClassVar[type[StrictModel]]

    def __init__(
        self,
        params: Any,
        shape: tuple[int, int],
        rng: np.random.Generator,
        w_init: float | FloatArray | None = None,
    ) -> None:
        self.params = params
        self.shape = (int(shape[0]), int(shape[1]))
        self.w_min = float(params.w_min)
        self.w_max = float(params.w_max)
        if not self.w_min < self.w_max:
            raise ValueError("w_min must be below w_max")
        self._rng = rng
        self._w_init = w_init
        self.reset()

    def reset(self) -> None:
        """Back to the initial weights (mid-range unless ``w_init`` was given)."""
        init = 0.5 * (self.w_min + self.w_max) if self._w_init is None else self._w_init
        w = np.broadcast_to(np.asarray(init, dtype=np.float64), self.shape)
        self._residual = np.zeros(self.shape)
        self._pulses = np.zeros(self.shape, dtype=np.int64)
        self._set_weights(np.clip(w, self.w_min, self.w_max).copy())

    @property
    @abstractmethod
    def weights(self) -> FloatArray:
        """The current weights, ``(n_pre, n_post)``, in ``[w_min, w_max]``."""

    @abstractmethod
    def _set_weights(self, w: FloatArray) -> None:
        """Program the device to hold ``w`` exactly (initialisation, restore)."""

    @property
    @abstractmethod
    def nominal_step(self) -> float:
        """Weight change of one potentiating pulse in the middle of the range."""

    @abstractmethod
    def apply_pulses(self, pulses: IntArray) -> None:
        """Apply ``pulses[i, j]`` signed pulses (> 0 potentiate, < 0 depress)."""

    def apply_change(self, dw: FloatArray) -> None:
        """Request a continuous change ``dw``; applied as whole pulses, remainder kept."""
        pulses_from_change(
            dw, self._residual, self.nominal_step, int(self.params.max_pulses), self._pulses
        )
        if self._pulses.any():
            self.apply_pulses(self._pulses)

    def state_dict(self) -> dict[str, np.ndarray]:
        """State to checkpoint (weights and the carried pulse remainder)."""
        return {"weights": self.weights.copy(), "residual": self._residual.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._set_weights(np.asarray(state["weights"], dtype=np.float64).copy())
        self._residual = np.asarray(state["residual"], dtype=np.float64).copy()
