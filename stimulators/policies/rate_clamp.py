"""Rate clamp: hold a unit's or a population's firing rate at a setpoint with a PI
controller that sets the stimulation intensity every control period (the closed-loop
analogue of homeostatic plasticity)."""

from __future__ import annotations

import collections
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from bci.schema import StrictModel
from bci.types import SpikeBatch
from decoders.frames import DecoderOutput
from stimulators.commands import Cause
from stimulators.policies.base import AnyStimCommand, CommandTemplate, Policy


class RateClampParams(StrictModel):
    """PI control of the mean rate (Hz) of ``units`` (default: every spike, divided by
    ``population_size``) by the command parameter ``actuator`` (``power_mw`` for light,
    ``frequency_hz`` or ``amplitude_ua`` for current), within ``[output_min, output_max]``.

    Each ``period_ms`` the rate over the last ``window_ms`` is compared with
    ``setpoint_hz``; ``u = kp * e + ki * ∫e dt`` (anti-windup: the integral stops at the
    limits) and, when ``u`` exceeds ``output_min``, one command covering the next period
    is sent.
    """

    kind: Literal["rate_clamp"] = "rate_clamp"
    device: str
    setpoint_hz: float = Field(gt=0)
    units: list[int] | None = None
    population_size: int = Field(1, ge=1)
    period_ms: float = Field(100.0, ge=5, le=60_000)
    window_ms: float = Field(500.0, ge=5, le=600_000)
    kp: float = Field(0.05, ge=0)
    ki: float = Field(0.2, ge=0)
    actuator: Literal["power_mw", "frequency_hz", "amplitude_ua"] = "power_mw"
    output_min: float = Field(0.0, ge=0)
    output_max: float = Field(gt=0)
    deadline_ms: float = Field(50.0, gt=0)
    command: CommandTemplate

    @model_validator(mode="after")
    def _check(self) -> RateClampParams:
        if self.output_max <= self.output_min:
            raise ValueError("output_max must exceed output_min")
        if self.window_ms < self.period_ms:
            raise ValueError("window_ms must be at least period_ms")
        if self.actuator == "power_mw" and self.command.kind != "optical":
            raise ValueError("actuator power_mw needs an optical command")
        if self.actuator == "amplitude_ua" and self.command.kind != "electrical":
            raise ValueError("actuator amplitude_ua needs an electrical command")
        return self


class RateClampPolicy(Policy):
    """Consumes spike batches; every control period produces at most one command."""

    kind = "rate_clamp"

    def __init__(self, params: RateClampParams, rig: str, sample_rate: float) -> None:
        super().__init__(rig, sample_rate)
        self.params = params
        self._period = max(1, round(params.period_ms * sample_rate / 1000.0))
        self._n_bins = max(1, round(params.window_ms / params.period_ms))
        self._units = None if params.units is None else np.asarray(params.units)
        self._size = len(params.units) if params.units is not None else params.population_size
        self.reset()

    def reset(self) -> None:
        self._bins = np.zeros(self._n_bins)
        self._filled = 0
        self._period_start: int | None = None
        self._count = 0
        self.integral = 0.0
        self.output = 0.0
        self.rate_hz = float("nan")
        self.commands_made = 0
        self.gaps = 0
        #: (period end sample, measured rate Hz, output) per control step, the last 100 000
        self.history: collections.deque[tuple[int, float, float]] = collections.deque(
            maxlen=100_000
        )

    def process(
        self,
        batch: SpikeBatch,
        now: float,
        decoded: DecoderOutput | None = None,
        readout: SpikeBatch | None = None,
    ) -> list[AnyStimCommand]:
        spikes = batch.spikes
        if self._units is not None:
            spikes = spikes[np.isin(spikes["unit"], self._units)]
        if self._period_start is None or batch.first_sample > self._period_start + self._period:
            # first batch, or the policy missed data (a stall): start a fresh period here
            # rather than integrating the error over time it did not observe
            if self._period_start is not None:
                self.gaps += 1
            self._period_start = batch.first_sample
            self._count = 0
        out: list[AnyStimCommand] = []
        samples = np.sort(spikes["sample"])
        while batch.end_sample >= self._period_start + self._period:
            end = self._period_start + self._period
            self._count += int(np.count_nonzero(samples < end))
            samples = samples[samples >= end]
            command = self._step(end, batch, now)
            if command is not None:
                out.append(command)
            self._period_start = end
            self._count = 0
        self._count += int(samples.size)
        self.commands_made += len(out)
        return out

    def _step(self, end: int, batch: SpikeBatch, now: float) -> AnyStimCommand | None:
        p = self.params
        period_s = self._period / self.sample_rate
        self._bins = np.roll(self._bins, -1)
        self._bins[-1] = self._count
        self._filled = min(self._filled + 1, self._n_bins)
        self.rate_hz = float(self._bins[-self._filled :].sum() / (self._filled * period_s))
        self.rate_hz /= self._size
        error = p.setpoint_hz - self.rate_hz
        candidate = self.integral + error * period_s
        u = p.kp * error + p.ki * candidate
        if (
            p.output_min < u < p.output_max
            or (u >= p.output_max and error < 0)
            or (u <= p.output_min and error > 0)
        ):
            self.integral = candidate  # integrate only while not pushing past a limit
        u = float(np.clip(p.kp * error + p.ki * self.integral, p.output_min, p.output_max))
        self.output = u
        self.history.append((end, self.rate_hz, u))
        if u <= p.output_min:
            return None
        t_end = batch.timestamp + (end - batch.first_sample) / self.sample_rate
        cause = Cause(time=t_end, sample=end)
        # a train fills 90 % of the period, so that a command sent a little late never
        # overlaps the previous one (the envelope would reject it: optical.busy)
        duration_ms = 0.9 * self._period / self.sample_rate * 1000.0
        overrides: dict[str, float] = {p.actuator: u}
        if p.command.kind == "optical":
            overrides["duration_ms"] = duration_ms
        else:
            freq = overrides.get("frequency_hz", p.command.frequency_hz)
            overrides["n_pulses"] = max(1, int(freq * duration_ms / 1000.0))
        return p.command.build(self.rig, p.device, cause, now + p.deadline_ms / 1000.0, **overrides)

    def status(self) -> dict[str, float]:
        return {
            "commands": float(self.commands_made),
            "rate_hz": self.rate_hz,
            "setpoint_hz": self.params.setpoint_hz,
            "output": self.output,
        }
