"""Simulated electrode and optogenetic drivers: apply commands to a simulated rig.

They run in the rig's own process and call the rig's two thread-safe methods,
``stimulate(ElectricalStimulus | OpticalStimulus) -> start_sample`` and
``stop_stimulation()`` (see :mod:`acquisition.sim.stimulus`).
"""

from __future__ import annotations

from typing import Any, Protocol

from acquisition.sim.stimulus import ElectricalStimulus, OpticalStimulus
from bci.clock import now
from stimulators.commands import ElectricalPulseTrain, OpticalPulseTrain
from stimulators.config import SimElectricalDriverConfig, SimOpticalDriverConfig
from stimulators.drivers.base import Driver, Execution

__all__ = ["SimElectricalDriver", "SimOpticalDriver", "StimulableRig"]


class StimulableRig(Protocol):
    """What a simulated driver needs from the rig (``SimulatedRig`` provides it)."""

    def stimulate(self, stimulus: ElectricalStimulus | OpticalStimulus) -> int: ...

    def stop_stimulation(self) -> None: ...


class _SimDriver(Driver):
    def __init__(
        self,
        spec: SimElectricalDriverConfig | SimOpticalDriverConfig,
        *,
        sim_rig: StimulableRig,
        **kwargs: Any,
    ) -> None:
        super().__init__(spec, **kwargs)
        self.sim_rig = sim_rig

    async def stop_output(self) -> None:
        self.sim_rig.stop_stimulation()


class SimElectricalDriver(_SimDriver):
    """Electrical pulse trains -> :class:`ElectricalStimulus` on the simulated rig."""

    kind = "sim_electrical"
    accepts = (ElectricalPulseTrain,)

    async def execute(self, command: ElectricalPulseTrain | OpticalPulseTrain) -> Execution:
        assert isinstance(command, ElectricalPulseTrain)
        stimulus = ElectricalStimulus(
            electrodes=tuple(command.electrodes),
            amplitudes_ua=command.amplitudes_ua,
            widths_us=command.widths_us,
            interphase_gap_us=command.interphase_gap_us,
            cathodic_first=command.cathodic_first,
            n_pulses=command.n_pulses,
            frequency_hz=command.frequency_hz,
        )
        t = now()
        return Execution(time=t, start_sample=int(self.sim_rig.stimulate(stimulus)))


class SimOpticalDriver(_SimDriver):
    """Optical pulse trains -> :class:`OpticalStimulus` on the simulated rig."""

    kind = "sim_optical"
    accepts = (OpticalPulseTrain,)

    async def execute(self, command: ElectricalPulseTrain | OpticalPulseTrain) -> Execution:
        assert isinstance(command, OpticalPulseTrain)
        stimulus = OpticalStimulus(
            site=command.site,
            power_mw=command.power_mw,
            pulse_width_ms=command.pulse_width_ms,
            n_pulses=command.n_pulses,
            frequency_hz=command.frequency_hz,
        )
        t = now()
        return Execution(time=t, start_sample=int(self.sim_rig.stimulate(stimulus)))
