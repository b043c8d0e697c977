"""Spike-triggered stimulation: a chosen unit (or any spike on chosen electrodes) fires,
and after ``delay_ms`` a stimulus goes out; then a lockout of ``lockout_ms`` (counted
from the stimulus) ignores further triggers."""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from bci.schema import StrictModel
from bci.types import SpikeBatch
from decoders.frames import DecoderOutput
from stimulators.commands import Cause, new_command_id
from stimulators.policies import kernels
from stimulators.policies.base import AnyStimCommand, CommandTemplate, Policy


class SpikeTriggeredParams(StrictModel):
    """Trigger on ``units`` (sorted unit ids) or on ``electrodes`` (any spike there)."""

    kind: Literal["spike_triggered"] = "spike_triggered"
    device: str
    units: list[int] | None = None
    electrodes: list[int] | None = None
    delay_ms: float = Field(0.0, ge=0, le=10_000)
    lockout_ms: float = Field(50.0, ge=0, le=600_000)
    deadline_ms: float = Field(20.0, gt=0, le=10_000, description="after the intended time")
    command: CommandTemplate

    @model_validator(mode="after")
    def _one_trigger(self) -> SpikeTriggeredParams:
        if (self.units is None) == (self.electrodes is None):
            raise ValueError("give exactly one of units or electrodes")
        return self


class SpikeTriggeredPolicy(Policy):
    """Consumes spike batches; produces one command per qualifying spike outside lockout.

    A trigger at sample ``s`` is due at ``s + delay``; it is sent with the first batch
    whose data reach that time, with ``cause`` = the trigger spike and ``deadline`` =
    due time + ``deadline_ms``. Triggers within the lockout are counted, not sent.
    """

    kind = "spike_triggered"

    def __init__(self, params: SpikeTriggeredParams, rig: str, sample_rate: float) -> None:
        super().__init__(rig, sample_rate)
        self.params = params
        # which unit ids (or electrodes) trigger, as a lookup table read by one compiled
        # call per batch (see policies.kernels)
        self._field = "unit" if params.units is not None else "channel"
        chosen = np.asarray(params.units if params.units is not None else params.electrodes)
        chosen = chosen[chosen >= 0]
        self._lut = np.zeros(int(chosen.max()) + 2 if chosen.size else 1, dtype=bool)
        self._lut[chosen] = True  # the last entry stays False: every id beyond the table
        self._picked = np.empty(64, dtype=np.int64)  # qualifying's scratch
        # the command, validated once: each trigger stamps a copy with its id, cause
        # and deadline (validating it again per trigger cost 100 µs with a cold cache)
        self._prototype = params.command.build(rig, params.device, Cause(time=0.0, sample=0), 0.0)
        self._delay = round(params.delay_ms * sample_rate / 1000.0)
        self._lockout = round(params.lockout_ms * sample_rate / 1000.0)
        self.reset()

    def reset(self) -> None:
        self._locked_until = -1  # absolute sample before which triggers are ignored
        self._pending: deque[tuple[int, float]] = deque()  # (trigger sample, trigger time)
        self.triggers = 0
        self.locked_out = 0
        self.commands_made = 0

    def qualifying(self, batch: SpikeBatch) -> np.ndarray:
        """The batch's spikes that trigger, in sample order."""
        spikes = batch.spikes
        if not len(spikes):
            return spikes
        if self._picked.size < len(spikes):
            self._picked = np.empty(2 * len(spikes), dtype=np.int64)
        # ids outside the table (beyond it, or negative: unsorted) read its last entry
        n = kernels.select(spikes[self._field], spikes["sample"], self._lut, self._picked)
        hits = spikes[self._picked[: abs(n)]]
        if n < 0:
            hits = hits[np.argsort(hits["sample"], kind="stable")]
        return hits

    def process(
        self,
        batch: SpikeBatch,
        now: float,
        decoded: DecoderOutput | None = None,
        readout: SpikeBatch | None = None,
    ) -> list[AnyStimCommand]:
        hits = self.qualifying(batch)
        if len(hits):
            # as Python numbers in two calls (row by row, numpy makes a scalar per field)
            for sample, t in zip(hits["sample"].tolist(), hits["time"].tolist(), strict=True):
                if sample < self._locked_until:
                    self.locked_out += 1
                    continue
                self.triggers += 1
                self._pending.append((sample, t))
                self._locked_until = sample + self._delay + self._lockout
        out: list[AnyStimCommand] = []
        delay_s = self._delay / self.sample_rate
        # due once the data have reached the intended time: decided on the data's own
        # clock, so a replay of the recording makes the same decisions
        data_time = batch.timestamp + (batch.end_sample - batch.first_sample) / self.sample_rate
        while self._pending and self._pending[0][1] + delay_s <= data_time + 1e-9:
            sample, t = self._pending.popleft()
            out.append(self._stamp(sample, t))
        self.commands_made += len(out)
        return out

    def _stamp(self, sample: int, t: float) -> AnyStimCommand:
        """The command for a trigger at ``sample`` (LSL time ``t``): a copy of the
        prototype with its own id, cause and deadline."""
        deadline = t + self._delay / self.sample_rate + self.params.deadline_ms / 1000.0
        # the time and sample come from the detector (finite; a sample index is never
        # negative): the cause skips validation on the hot path
        cause = Cause.model_construct(time=t, sample=sample)
        return self._prototype.model_copy(
            update={"command_id": new_command_id(), "cause": cause, "deadline": deadline}
        )

    def rehearsal(self, at: float) -> AnyStimCommand | None:
        """What a trigger at LSL time ``at`` would send (nothing changes)."""
        return self._stamp(max(self._locked_until, 0), at)

    def status(self) -> dict[str, float]:
        return {
            "commands": float(self.commands_made),
            "triggers": float(self.triggers),
            "locked_out": float(self.locked_out),
        }
