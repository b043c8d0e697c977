"""Neuron models of the simulated rig: a registry of one file per model.

To add a model: write ``mymodel.py`` with a ``Params`` model (``kind: Literal["mymodel"]``)
and a :class:`~acquisition.sim.neurons.base.NeuronModel` subclass, then add it to
``_MODELS`` below (the config union is built from the same tuple).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from acquisition.sim.neurons.base import NeuronModel, SynapseBlock
from acquisition.sim.neurons.fitzhugh_nagumo import FitzHughNagumoModel, FitzHughNagumoParams
from acquisition.sim.neurons.hodgkin_huxley import HodgkinHuxleyModel, HodgkinHuxleyParams
from acquisition.sim.neurons.izhikevich import IzhikevichModel, IzhikevichParams
from acquisition.sim.neurons.lif import LifModel, LifParams
from acquisition.sim.neurons.poisson import PoissonModel, PoissonParams
from bci.errors import UnknownKindError

_MODELS: tuple[type[NeuronModel], ...] = (
    LifModel,
    IzhikevichModel,
    HodgkinHuxleyModel,
    FitzHughNagumoModel,
    PoissonModel,
)

NEURON_MODELS: dict[str, type[NeuronModel]] = {m.kind: m for m in _MODELS}

#: The config union of every model's parameters, discriminated on ``kind``.
NeuronParams = Annotated[
    LifParams | IzhikevichParams | HodgkinHuxleyParams | FitzHughNagumoParams | PoissonParams,
    Field(discriminator="kind"),
]


def model_class(kind: str) -> type[NeuronModel]:
    """The neuron model registered under ``kind``."""
    try:
        return NEURON_MODELS[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown neuron model {kind!r}; known: {sorted(NEURON_MODELS)}", kind=kind
        ) from None


__all__ = ["NEURON_MODELS", "NeuronModel", "NeuronParams", "SynapseBlock", "model_class"]
