"""Stimuli the simulated rig can receive (the seam between drivers and the rig).

A driver (``stimulators/``) turns a validated command into one of these and calls
``SimulatedRig.stimulate(stimulus)``, which is thread-safe and returns the absolute
sample index at which the stimulus starts. The rig applies it from the next block it
simulates (or at ``start_sample`` if that is later).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci.errors import SimulationError


@dataclass(frozen=True, slots=True)
class ElectricalStimulus:
    """A biphasic current pulse train on one or more electrodes.

    ``amplitudes_ua``: magnitude (µA, >= 0) of the first and second phase;
    ``widths_us``: their durations (µs); ``interphase_gap_us`` between them;
    ``cathodic_first``: the first phase is cathodic (negative, depolarising);
    ``n_pulses`` pulses at ``frequency_hz``; ``start_sample``: absolute sample index
    to start at, or ``None`` for as soon as possible.
    """

    electrodes: tuple[int, ...]
    amplitudes_ua: tuple[float, float]
    widths_us: tuple[float, float]
    interphase_gap_us: float = 0.0
    cathodic_first: bool = True
    n_pulses: int = 1
    frequency_hz: float = 100.0
    start_sample: int | None = None

    def __post_init__(self) -> None:
        if not self.electrodes:
            raise SimulationError("an electrical stimulus needs at least one electrode")
        if min(self.amplitudes_ua) < 0 or min(self.widths_us) <= 0:
            raise SimulationError(
                "amplitudes must be >= 0 µA and widths > 0 µs",
                amplitudes_ua=self.amplitudes_ua,
                widths_us=self.widths_us,
            )
        if self.n_pulses < 1 or self.frequency_hz <= 0 or self.interphase_gap_us < 0:
            raise SimulationError(
                "need n_pulses >= 1, frequency_hz > 0, interphase_gap_us >= 0",
                n_pulses=self.n_pulses,
                frequency_hz=self.frequency_hz,
            )

    def waveform_ua(self, sample_rate_hz: float) -> np.ndarray:
        """Electrode current (µA, cathodic negative) sampled at ``sample_rate_hz``.

        Each phase lasts at least one sample, so short phases are never lost.
        """
        dt_us = 1e6 / sample_rate_hz
        w1 = max(1, round(self.widths_us[0] / dt_us))
        gap = round(self.interphase_gap_us / dt_us)
        w2 = max(1, round(self.widths_us[1] / dt_us))
        period = max(w1 + gap + w2, round(sample_rate_hz / self.frequency_hz))
        sign = -1.0 if self.cathodic_first else 1.0
        pulse = np.zeros(period)
        pulse[:w1] = sign * self.amplitudes_ua[0]
        pulse[w1 + gap : w1 + gap + w2] = -sign * self.amplitudes_ua[1]
        train = np.tile(pulse, self.n_pulses)
        return train[: (self.n_pulses - 1) * period + w1 + gap + w2]


@dataclass(frozen=True, slots=True)
class OpticalStimulus:
    """A train of light pulses from one optical site.

    ``power_mw`` at the emitter during each pulse of ``pulse_width_ms``; ``n_pulses``
    at ``frequency_hz``; ``start_sample`` as for :class:`ElectricalStimulus`.
    """

    site: str
    power_mw: float
    pulse_width_ms: float
    n_pulses: int = 1
    frequency_hz: float = 10.0
    start_sample: int | None = None

    def __post_init__(self) -> None:
        if self.power_mw < 0 or self.pulse_width_ms <= 0:
            raise SimulationError(
                "need power_mw >= 0 and pulse_width_ms > 0",
                power_mw=self.power_mw,
                pulse_width_ms=self.pulse_width_ms,
            )
        if self.n_pulses < 1 or self.frequency_hz <= 0:
            raise SimulationError("need n_pulses >= 1 and frequency_hz > 0")

    def waveform_mw(self, sample_rate_hz: float) -> np.ndarray:
        """Emitted power (mW) sampled at ``sample_rate_hz``."""
        width = max(1, round(self.pulse_width_ms * sample_rate_hz / 1000.0))
        period = max(width, round(sample_rate_hz / self.frequency_hz))
        pulse = np.zeros(period)
        pulse[:width] = self.power_mw
        train = np.tile(pulse, self.n_pulses)
        return train[: (self.n_pulses - 1) * period + width]


Stimulus = ElectricalStimulus | OpticalStimulus
