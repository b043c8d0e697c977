"""What every closed-loop policy shares: command templates and the policy interface.

A policy is a synchronous stage: ``process(batch, now, decoded)`` consumes the spikes
of one chunk (and optionally the decoder's output) and returns the stimulation
commands to send now. It never talks to hardware: every command it makes goes through
the safety envelope at the publisher and again at the driver, so a policy cannot
bypass it. Every command carries the LSL time and sample index of the data that
caused it, and a deadline after which it must not run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Literal

from pydantic import Field

from bci.schema import StrictModel
from bci.types import SpikeBatch
from decoders.frames import DecoderOutput
from stimulators.commands import (
    Cause,
    ElectricalPulseTrain,
    OpticalPulseTrain,
    new_command_id,
)

AnyStimCommand = ElectricalPulseTrain | OpticalPulseTrain


class ElectricalTemplate(StrictModel):
    """A symmetric biphasic pulse train: ``amplitude_ua`` and ``width_us`` per phase."""

    kind: Literal["electrical"] = "electrical"
    electrodes: list[int] = Field(min_length=1)
    amplitude_ua: float = Field(gt=0)
    width_us: float = Field(200.0, gt=0)
    interphase_gap_us: float = Field(0.0, ge=0)
    cathodic_first: bool = True
    n_pulses: int = Field(1, ge=1)
    frequency_hz: float = Field(100.0, gt=0)

    def build(
        self, rig: str, device: str, cause: Cause, deadline: float, **overrides: float
    ) -> ElectricalPulseTrain:
        amplitude = overrides.get("amplitude_ua", self.amplitude_ua)
        return ElectricalPulseTrain(
            command_id=new_command_id(),
            rig=rig,
            device=device,
            cause=cause,
            deadline=deadline,
            electrodes=list(self.electrodes),
            amplitudes_ua=(amplitude, amplitude),
            widths_us=(self.width_us, self.width_us),
            interphase_gap_us=self.interphase_gap_us,
            cathodic_first=self.cathodic_first,
            n_pulses=int(overrides.get("n_pulses", self.n_pulses)),
            frequency_hz=overrides.get("frequency_hz", self.frequency_hz),
        )


class OpticalTemplate(StrictModel):
    """Light pulses from ``site``: ``power_mw`` for ``pulse_width_ms`` at ``frequency_hz``
    during ``duration_ms``."""

    kind: Literal["optical"] = "optical"
    site: str
    power_mw: float = Field(gt=0)
    pulse_width_ms: float = Field(5.0, gt=0)
    frequency_hz: float = Field(20.0, gt=0)
    duration_ms: float = Field(5.0, gt=0)

    def build(
        self, rig: str, device: str, cause: Cause, deadline: float, **overrides: float
    ) -> OpticalPulseTrain:
        return OpticalPulseTrain(
            command_id=new_command_id(),
            rig=rig,
            device=device,
            cause=cause,
            deadline=deadline,
            site=self.site,
            power_mw=overrides.get("power_mw", self.power_mw),
            pulse_width_ms=overrides.get("pulse_width_ms", self.pulse_width_ms),
            frequency_hz=overrides.get("frequency_hz", self.frequency_hz),
            duration_ms=overrides.get("duration_ms", self.duration_ms),
        )


CommandTemplate = Annotated[ElectricalTemplate | OpticalTemplate, Field(discriminator="kind")]


class Policy(ABC):
    """Spikes (and decoded values) in, stimulation commands out; see the module doc."""

    kind: str

    def __init__(self, rig: str, sample_rate: float) -> None:
        self.rig = rig
        self.sample_rate = float(sample_rate)
        self.commands_made = 0

    @abstractmethod
    def process(
        self,
        batch: SpikeBatch,
        now: float,
        decoded: DecoderOutput | None = None,
        readout: SpikeBatch | None = None,
    ) -> list[AnyStimCommand]:
        """Commands to send now for this chunk (``now`` is the LSL time); ``decoded`` and
        ``readout`` are the decoder's rows and the spiking readout's output spikes, when
        the loop has a decoder."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all state (pending triggers, integrators)."""

    def rehearsal(self, at: float) -> AnyStimCommand | None:
        """A command like the next one this policy would make at LSL time ``at``, built
        the same way but changing nothing, for :meth:`bci.loop.HotPath.rehearse`
        (``None``: this policy has no latency to save)."""
        return None

    def status(self) -> dict[str, float]:
        """Figures for the progress display and the report (override)."""
        return {"commands": float(self.commands_made)}
