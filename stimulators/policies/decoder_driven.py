"""Decoder-driven stimulation: stimulus parameters from the decoder's output, or one
stimulus per output spike of the plastic spiking readout."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from bci.schema import StrictModel
from bci.types import SpikeBatch
from decoders.frames import DecoderOutput
from stimulators.commands import Cause
from stimulators.policies.base import AnyStimCommand, CommandTemplate, Policy


class DecoderDrivenParams(StrictModel):
    """``source: decoded``: for each decoded row whose ``|value[dimension]|`` reaches
    ``threshold``, send the command with ``actuator = clip(gain * |value|, min, max)``.
    ``source: readout``: send the command for each output spike of readout neuron
    ``dimension`` (``-1``: any). Consecutive commands are at least ``min_interval_ms``
    apart."""

    kind: Literal["decoder_driven"] = "decoder_driven"
    device: str
    source: Literal["decoded", "readout"] = "decoded"
    dimension: int = Field(0, ge=-1)
    threshold: float = Field(0.0, ge=0)
    gain: float = Field(1.0, ge=0)
    actuator: Literal["power_mw", "frequency_hz", "amplitude_ua"] | None = None
    output_min: float = Field(0.0, ge=0)
    output_max: float = Field(1e6, gt=0, description="upper clip of the actuator value")
    min_interval_ms: float = Field(20.0, ge=0)
    deadline_ms: float = Field(20.0, gt=0)
    command: CommandTemplate


class DecoderDrivenPolicy(Policy):
    """Consumes decoded rows or readout spikes; produces commands (see the params)."""

    kind = "decoder_driven"

    def __init__(self, params: DecoderDrivenParams, rig: str, sample_rate: float) -> None:
        super().__init__(rig, sample_rate)
        self.params = params
        self._interval = round(params.min_interval_ms * sample_rate / 1000.0)
        self.reset()

    def reset(self) -> None:
        self._next_allowed = -1
        self.commands_made = 0
        self.skipped = 0

    def _events(
        self, decoded: DecoderOutput | None, readout: SpikeBatch | None
    ) -> list[tuple[int, float, float]]:
        """(sample, LSL time, magnitude) of each candidate event."""
        p = self.params
        if p.source == "readout":
            if readout is None or len(readout) == 0:
                return []
            spikes = readout.spikes
            if p.dimension >= 0:
                spikes = spikes[spikes["unit"] == p.dimension]
            return [(int(s["sample"]), float(s["time"]), 1.0) for s in spikes]
        if decoded is None or len(decoded) == 0:
            return []
        values = np.abs(decoded.values[:, max(p.dimension, 0)])
        return [
            (int(decoded.end_sample[k]), float(decoded.timestamp[k]), float(values[k]))
            for k in range(len(values))
            if values[k] >= p.threshold
        ]

    def process(
        self,
        batch: SpikeBatch,
        now: float,
        decoded: DecoderOutput | None = None,
        readout: SpikeBatch | None = None,
    ) -> list[AnyStimCommand]:
        p = self.params
        out: list[AnyStimCommand] = []
        for sample, t, magnitude in self._events(decoded, readout):
            if sample < self._next_allowed:
                self.skipped += 1
                continue
            self._next_allowed = sample + self._interval
            overrides: dict[str, float] = {}
            if p.actuator is not None:
                overrides[p.actuator] = float(
                    np.clip(p.gain * magnitude, p.output_min, p.output_max)
                )
            cause = Cause(time=t, sample=sample)
            out.append(
                p.command.build(
                    self.rig, p.device, cause, now + p.deadline_ms / 1000.0, **overrides
                )
            )
        self.commands_made += len(out)
        return out

    def status(self) -> dict[str, float]:
        return {"commands": float(self.commands_made), "skipped": float(self.skipped)}
