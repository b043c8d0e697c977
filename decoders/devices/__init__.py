"""Synapse device models: a registry of one file per device.

A rule decides the direction and number of pulses; the device decides the change.
To add a device: write ``mydevice.py`` with a ``Params`` model (``kind: Literal[...]``)
and a :class:`~decoders.devices.base.SynapseDevice` subclass, add the class to
``_DEVICES`` and its params to ``DeviceParams`` below.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from bci.errors import UnknownKindError
from bci.types import FloatArray
from decoders.devices.base import SynapseDevice
from decoders.devices.ideal import IdealDevice, IdealParams
from decoders.devices.memristor import MemristorDevice, MemristorParams
from decoders.devices.pulsed import PulsedDevice, PulsedParams

_DEVICES: tuple[type[SynapseDevice], ...] = (IdealDevice, PulsedDevice, MemristorDevice)

DEVICES: dict[str, type[SynapseDevice]] = {d.kind: d for d in _DEVICES}

#: The config union of every device's parameters, discriminated on ``kind``.
DeviceParams = Annotated[IdealParams | PulsedParams | MemristorParams, Field(discriminator="kind")]


def device_class(kind: str) -> type[SynapseDevice]:
    """The device registered under ``kind``."""
    try:
        return DEVICES[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown synapse device {kind!r}; known: {sorted(DEVICES)}", kind=kind
        ) from None


def make_device(
    params: IdealParams | PulsedParams | MemristorParams,
    shape: tuple[int, int],
    rng: np.random.Generator,
    w_init: float | FloatArray | None = None,
) -> SynapseDevice:
    """Build the device that ``params.kind`` names."""
    return device_class(params.kind)(params, shape, rng, w_init)


__all__ = ["DEVICES", "DeviceParams", "SynapseDevice", "device_class", "make_device"]
