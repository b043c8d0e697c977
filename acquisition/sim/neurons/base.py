"""The interface every neuron model implements, and the shared synapse helper.

A population of ``n`` neurons of one model advances ``L`` time steps at a time
(``L`` never exceeds the network's minimum synaptic delay, so populations can be
advanced one after another within a block). Per step and neuron the model receives

* an external current ``i_ext[t, j]`` in the model's own current unit
  (:attr:`NeuronModel.current_unit`): tonic drive + noise + stimulation + photocurrent;
* synaptic arrivals ``ge_in[t, j]`` / ``gi_in[t, j]`` that are added to the
  exponentially decaying excitatory and inhibitory synaptic variables ``ge``/``gi``.

The synaptic current is :func:`synaptic_current`: ``ge - gi`` (current-based, weights
in the model's current unit) or ``ge (E_exc - v) + gi (E_inh - v)`` (conductance-based,
weights in current unit per mV; only models whose ``v`` is in mV).

The kernel writes each spike as a row ``(step within block, local neuron index)`` into
a preallocated ``spikes`` array and returns the number of rows written. Kernels are
``@njit(cache=True, nogil=True)`` plain functions; the class is a thin holder of state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from bci.schema import StrictModel
from bci.types import FloatArray, IntArray

SYN_CURRENT = 0
SYN_CONDUCTANCE = 1


@njit(cache=True, nogil=True, inline="always")
def synaptic_current(
    ge: float, gi: float, v: float, mode: int, e_exc: float, e_inh: float
) -> float:
    """Synaptic current into a neuron: current-based (``mode`` 0) or conductance-based (1)."""
    if mode == SYN_CONDUCTANCE:
        return ge * (e_exc - v) + gi * (e_inh - v)
    return ge - gi


@dataclass(slots=True)
class SynapseBlock:
    """Synaptic state of a population and the arrivals for the next block.

    ``ge``/``gi``: ``(n,)`` state (decayed every step by ``decay_e``/``decay_i``);
    ``ge_in``/``gi_in``: ``(L, n)`` increments arriving at each step of the block.
    """

    ge: FloatArray
    gi: FloatArray
    ge_in: FloatArray
    gi_in: FloatArray
    decay_e: float
    decay_i: float
    mode: int
    e_exc: float
    e_inh: float

    @classmethod
    def empty(cls, n: int, n_steps: int, dt_ms: float) -> SynapseBlock:
        """No synapses: zero state and arrivals (for testing a model on its own)."""
        return cls(
            ge=np.zeros(n),
            gi=np.zeros(n),
            ge_in=np.zeros((n_steps, n)),
            gi_in=np.zeros((n_steps, n)),
            decay_e=float(np.exp(-dt_ms / 5.0)),
            decay_i=float(np.exp(-dt_ms / 10.0)),
            mode=SYN_CURRENT,
            e_exc=0.0,
            e_inh=-80.0,
        )


class NeuronModel(ABC):
    """A population of ``n`` neurons of one model.

    Subclasses set ``kind`` (the config tag), ``Params`` (their pydantic model, with a
    ``kind: Literal[...]`` field), ``current_unit`` (unit of ``i_ext`` and current-based
    weights), ``default_drive`` (a tonic current that makes the model fire at a few Hz
    to a few tens of Hz), ``default_stim_gain`` (model current per µA of cathodic
    electrode current at zero distance) and ``voltage_in_mv`` (whether conductance-based
    synapses make sense).
    """

    kind: ClassVar[str]
    Params: ClassVar[type[StrictModel]]
    current_unit: ClassVar[str]
    default_drive: ClassVar[float]
    default_stim_gain: ClassVar[float]
    voltage_in_mv: ClassVar[bool] = True

    def __init__(self, params: StrictModel, n: int, rng: np.random.Generator) -> None:
        self.params = params
        self.n = int(n)
        self._rng = rng
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Put every neuron back in its initial (resting, randomised by ``rng``) state."""

    @abstractmethod
    def advance(self, i_ext: FloatArray, syn: SynapseBlock, dt_ms: float, spikes: IntArray) -> int:
        """Advance ``i_ext.shape[0]`` steps of ``dt_ms``; write spikes; return their count.

        ``spikes`` has shape ``(capacity, 2)`` with capacity at least ``L * n``.
        """

    @property
    @abstractmethod
    def v(self) -> FloatArray:
        """Membrane potential (mV, or the model's dimensionless variable) of each neuron."""
