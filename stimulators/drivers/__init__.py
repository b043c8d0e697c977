"""Stimulation drivers, by ``kind``: a new driver is one file and one line in ``DRIVERS``
(plus its config model in :mod:`stimulators.config`)."""

from __future__ import annotations

import asyncio
from typing import Any

from bci.errors import ConfigError
from stimulators.config import MqttConfig, StimulationConfig
from stimulators.drivers.base import Driver, DriverSpec, Execution
from stimulators.drivers.dryrun import DryRunDriver
from stimulators.drivers.sim import SimElectricalDriver, SimOpticalDriver, StimulableRig

__all__ = [
    "DRIVERS",
    "Driver",
    "DryRunDriver",
    "Execution",
    "SimElectricalDriver",
    "SimOpticalDriver",
    "StimulableRig",
    "create_driver",
    "create_drivers",
    "run_drivers",
]

DRIVERS: dict[str, type[Driver]] = {
    "dryrun": DryRunDriver,
    "sim_electrical": SimElectricalDriver,
    "sim_optical": SimOpticalDriver,
}

#: Drivers that apply commands to a simulated rig of the same process.
NEEDS_SIM_RIG = frozenset({"sim_electrical", "sim_optical"})


def create_driver(
    spec: DriverSpec,
    *,
    rig: str,
    stimulation: StimulationConfig | None,
    mqtt: MqttConfig | None,
    index: int = 0,
    sim_rig: StimulableRig | None = None,
) -> Driver:
    """Build the driver ``spec`` describes; a :class:`ConfigError` names the field."""
    where = f"drivers[{index}]"
    if stimulation is None:
        raise ConfigError(f"{where}: a driver needs a stimulation: section with its device")
    try:
        device = stimulation.device(spec.device)
    except KeyError:
        names = [d.name for d in stimulation.devices]
        raise ConfigError(
            f"{where}.device: unknown device {spec.device!r}; stimulation.devices has {names}"
        ) from None
    cls = DRIVERS[spec.kind]
    wanted = {"sim_electrical": "electrical", "sim_optical": "optical"}.get(spec.kind)
    if wanted is not None and device.kind != wanted:
        raise ConfigError(
            f"{where}: a {spec.kind} driver needs an {wanted} device; "
            f"{device.name!r} is {device.kind}"
        )
    kwargs: dict[str, Any] = {
        "rig": rig,
        "device": device,
        "stimulation": stimulation,
        "mqtt": mqtt,
    }
    if spec.kind in NEEDS_SIM_RIG:
        if sim_rig is None:
            raise ConfigError(
                f"{where}: a {spec.kind} driver runs inside the simulated rig "
                "(bci sim-rig), not on its own"
            )
        kwargs["sim_rig"] = sim_rig
    return cls(spec, **kwargs)


def create_drivers(
    config: Any,
    mqtt: MqttConfig | None,
    *,
    sim_rig: StimulableRig | None = None,
    kinds: frozenset[str] | None = None,
) -> list[Driver]:
    """Every driver of a whole config (a ``BciConfig``), optionally only some kinds."""
    return [
        create_driver(
            spec,
            rig=config.rig,
            stimulation=config.stimulation,
            mqtt=mqtt,
            index=i,
            sim_rig=sim_rig,
        )
        for i, spec in enumerate(config.drivers)
        if kinds is None or spec.kind in kinds
    ]


async def run_drivers(drivers: list[Driver]) -> None:
    """Run ``drivers`` concurrently until cancelled (or one fails)."""
    async with asyncio.TaskGroup() as tg:
        for d in drivers:
            tg.create_task(d.run(), name=f"driver-{d.name}")
