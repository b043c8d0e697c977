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
from stimulators.commands import Cause
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
        # which unit ids (or electrodes) trigger, as a lookup table: one indexing per
        # batch instead of np.isin (a sort per call), on the hot path of every chunk
        self._field = "unit" if params.units is not None else "channel"
        chosen = np.asarray(params.units if params.units is not None else params.electrodes)
        chosen = chosen[chosen >= 0]
        self._lut = np.zeros(int(chosen.max()) + 2 if chosen.size else 1, dtype=bool)
        self._lut[chosen] = True  # the last entry stays False: every id beyond the table
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
        ids = spikes[self._field]
        lut = self._lut
        # ids outside the table (beyond it, or negative: unsorted) map to its last entry
        idx = np.where((ids >= 0) & (ids < lut.size), ids, lut.size - 1)
        hits = spikes[lut[idx]]
        if len(hits) > 1:
            hits = hits[np.argsort(hits["sample"], kind="stable")]
        return hits

    def process(
        self,
        batch: SpikeBatch,
        now: float,
        decoded: DecoderOutput | None = None,
        readout: SpikeBatch | None = None,
    ) -> list[AnyStimCommand]:
        for spike in self.qualifying(batch):
            sample = int(spike["sample"])
            if sample < self._locked_until:
                self.locked_out += 1
                continue
            self.triggers += 1
            self._pending.append((sample, float(spike["time"])))
            self._locked_until = sample + self._delay + self._lockout
        out: list[AnyStimCommand] = []
        delay_s = self._delay / self.sample_rate
        # due once the data have reached the intended time: decided on the data's own
        # clock, so a replay of the recording makes the same decisions
        data_time = batch.timestamp + (batch.end_sample - batch.first_sample) / self.sample_rate
        while self._pending and self._pending[0][1] + delay_s <= data_time + 1e-9:
            sample, t = self._pending.popleft()
            p = self.params
            deadline = t + delay_s + p.deadline_ms / 1000.0
            out.append(p.command.build(self.rig, p.device, Cause(time=t, sample=sample), deadline))
        self.commands_made += len(out)
        return out

    def status(self) -> dict[str, float]:
        return {
            "commands": float(self.commands_made),
            "triggers": float(self.triggers),
            "locked_out": float(self.locked_out),
        }
