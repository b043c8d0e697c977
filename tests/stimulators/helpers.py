"""Helpers for the stimulation tests: configs, commands and a recording driver."""

from __future__ import annotations

import uuid
from typing import Any

from bci.clock import now
from stimulators.commands import Cause, ElectricalPulseTrain, OpticalPulseTrain, StopAll
from stimulators.config import (
    DryRunDriverConfig,
    ElectricalDeviceConfig,
    MqttConfig,
    OpticalDeviceConfig,
    StimulationConfig,
)
from stimulators.drivers.base import Driver, Execution

ELECTRODES = {
    "ids": ["0-7"],
    "material": "iridium_oxide",
    "geometric_area_um2": 1250.0,
    "max_amplitude_ua": 50.0,
    "min_width_us": 50.0,
    "max_width_us": 500.0,
    "max_frequency_hz": 200.0,
    "max_rate_hz": 200.0,
}
MACRO = {
    "ids": [100],
    "material": "platinum_iridium",
    "geometric_area_um2": 6.0e6,
    "max_amplitude_ua": 5000.0,
    "min_width_us": 20.0,
    "max_width_us": 1000.0,
}


def stimulation_config(**overrides: Any) -> StimulationConfig:
    data: dict[str, Any] = {
        "heartbeat_interval_ms": 50.0,
        "heartbeat_timeout_ms": 500.0,
        "devices": [
            {"kind": "electrical", "name": "stim0", "electrodes": [ELECTRODES, MACRO]},
            {
                "kind": "optical",
                "name": "opto0",
                "sites": [{"site": "fiber0", "wavelength_nm": 473.0}],
            },
        ],
    }
    data.update(overrides)
    return StimulationConfig.model_validate(data)


def electrical(device: str = "stim0", rig: str = "rig0", **fields: Any) -> ElectricalPulseTrain:
    data: dict[str, Any] = {
        "command_id": uuid.uuid4(),
        "rig": rig,
        "device": device,
        "cause": Cause(time=now(), sample=1234),
        "deadline": now() + 5.0,
        "electrodes": [1],
        "amplitudes_ua": (10.0, 10.0),
        "widths_us": (100.0, 100.0),
    }
    data.update(fields)
    return ElectricalPulseTrain.model_validate(data)


def optical(device: str = "opto0", rig: str = "rig0", **fields: Any) -> OpticalPulseTrain:
    data: dict[str, Any] = {
        "command_id": uuid.uuid4(),
        "rig": rig,
        "device": device,
        "cause": Cause(time=now(), sample=99),
        "deadline": now() + 5.0,
        "site": "fiber0",
        "power_mw": 5.0,
        "pulse_width_ms": 5.0,
        "frequency_hz": 20.0,
        "duration_ms": 100.0,
    }
    data.update(fields)
    return OpticalPulseTrain.model_validate(data)


def stop_all(device: str = "stim0", rig: str = "rig0") -> StopAll:
    return StopAll(
        command_id=uuid.uuid4(),
        rig=rig,
        device=device,
        cause=Cause(time=now(), sample=0),
        deadline=now() + 5.0,
    )


class RecordingDriver(Driver):
    """A driver that records what it executes and when output was stopped."""

    kind = "recording"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed: list[Any] = []
        self.stops: list[float] = []

    async def execute(self, command: Any) -> Execution:
        t = now()
        self.executed.append((t, command))
        return Execution(time=t, start_sample=len(self.executed))

    async def stop_output(self) -> None:
        self.stops.append(now())


def make_driver(
    stimulation: StimulationConfig | None = None,
    device: str = "stim0",
    mqtt_url: str | None = None,
    rig: str = "rig0",
    **spec: Any,
) -> RecordingDriver:
    stimulation = stimulation or stimulation_config()
    spec.setdefault("device", device)
    return RecordingDriver(
        DryRunDriverConfig.model_validate(spec),
        rig=rig,
        device=stimulation.device(device),
        stimulation=stimulation,
        mqtt=mqtt_config(mqtt_url) if mqtt_url else None,
    )


def mqtt_config(url: str, **fields: Any) -> MqttConfig:
    data: dict[str, Any] = {"url": url, "keepalive_s": 5, "reconnect_max_s": 0.3}
    data.update(fields)
    return MqttConfig.model_validate(data)


def electrical_device() -> ElectricalDeviceConfig:
    dev = stimulation_config().device("stim0")
    assert isinstance(dev, ElectricalDeviceConfig)
    return dev


def optical_device() -> OpticalDeviceConfig:
    dev = stimulation_config().device("opto0")
    assert isinstance(dev, OpticalDeviceConfig)
    return dev
