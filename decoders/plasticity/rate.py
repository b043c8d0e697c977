"""Rate-based LTP/LTD (Serb et al. 2020, brain-memristor-silicon experiment).

Time is cut into epochs of ``window_ms`` (starting at the first chunk seen). At the end
of an epoch, every presynaptic unit whose rate over the epoch is above
``threshold_hz`` sends ``pulses_ltp`` potentiating pulses to each of its synapses; one
below ``threshold_hz - deadband_hz`` sends ``pulses_ltd`` depressing pulses. The rule
only decides direction and pulse count; the device decides the change.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field

from bci.schema import StrictModel
from decoders.plasticity.base import PlasticityRule, Spikes


class RateRuleParams(StrictModel):
    """Presynaptic-rate threshold rule (rates in Hz, epoch in ms)."""

    kind: Literal["rate"] = "rate"
    window_ms: float = Field(1000.0, gt=0, description="epoch over which the rate is counted")
    threshold_hz: float = Field(10.0, ge=0)
    deadband_hz: float = Field(0.0, ge=0, description="no change within this band below")
    pulses_ltp: int = Field(1, ge=0)
    pulses_ltd: int = Field(1, ge=0)


@njit(cache=True, nogil=True)
def rate_rule_kernel(
    samples: np.ndarray,
    units: np.ndarray,
    counts: np.ndarray,
    epoch: np.ndarray,
    window: int,
    end_sample: int,
    threshold_count: float,
    deadband_count: float,
    pulses_ltp: int,
    pulses_ltd: int,
    pulses: np.ndarray,
) -> int:
    """Count spikes per unit; at each closed epoch add signed pulses per pre unit.

    ``epoch[0]`` is the first sample of the open epoch; returns how many epochs closed.
    """
    closed = 0
    k = 0
    n = counts.size
    while True:
        boundary = epoch[0] + window
        while k < samples.size and samples[k] < boundary:
            counts[units[k]] += 1
            k += 1
        if boundary > end_sample:
            break
        for i in range(n):
            if counts[i] > threshold_count:
                pulses[i] += pulses_ltp
            elif counts[i] < threshold_count - deadband_count:
                pulses[i] -= pulses_ltd
            counts[i] = 0
        epoch[0] = boundary
        closed += 1
    return closed


class RateRule(PlasticityRule):
    """Serb-style rate rule: pulses per epoch from the presynaptic rate alone."""

    kind: ClassVar[str] = "rate"
    Params: ClassVar[type[StrictModel]] = RateRuleParams

    params: RateRuleParams

    def _reset_state(self) -> None:
        self._counts = np.zeros(self.n_pre, dtype=np.int64)
        self._epoch = np.zeros(1, dtype=np.int64)
        self._pulses_pre = np.zeros(self.n_pre, dtype=np.int64)
        self.epochs_closed = 0

    def _update(self, pre: Spikes, post: Spikes, first_sample: int, end_sample: int) -> None:
        p = self.params
        if self.epochs_closed == 0 and self._epoch[0] == 0:
            self._epoch[0] = self._start if self._start is not None else first_sample
        window = max(1, round(self.samples(p.window_ms)))
        seconds = window / self.sample_rate
        self._pulses_pre.fill(0)
        closed = rate_rule_kernel(
            pre[0],
            pre[1],
            self._counts,
            self._epoch,
            window,
            end_sample,
            p.threshold_hz * seconds,
            p.deadband_hz * seconds,
            p.pulses_ltp,
            p.pulses_ltd,
            self._pulses_pre,
        )
        self.epochs_closed += closed
        if closed and self._pulses_pre.any():
            pulses = np.repeat(self._pulses_pre[:, None], self.n_post, axis=1)
            self.device.apply_pulses(pulses)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "counts": self._counts.copy(),
            "epoch": self._epoch.copy(),
            "epochs_closed": np.array(self.epochs_closed),
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._counts = np.asarray(state["counts"], np.int64).copy()
        self._epoch = np.asarray(state["epoch"], np.int64).copy()
        self.epochs_closed = int(state["epochs_closed"])
