"""How the simulated tissue responds to stimulation.

Electrical: a neuron at 3-D distance ``d`` from a stimulating contact receives
``stim_gain * max(0, -I(t)) / (1 + (d / r0)**2)`` in its model's current unit, where
``I(t)`` is the electrode current in µA (cathodic negative). Only the cathodic phase
drives it: near a cathode the membrane depolarises, and a leaky membrane would
otherwise integrate a charge-balanced pulse to almost nothing. Each contact records
an artifact ``k * I(t) / (1 + d / r_a)``, smeared by the amplifier's recovery
(``artifact_decay_ms``) and clipped at ``±artifact_max_uv``.

Optical: irradiance (mW/mm²) from a site at distance ``d`` is
``P / area * exp(-d / attenuation) / (1 + (d / spread)**2)``; opsin-expressing
neurons open a light-gated conductance with first-order kinetics towards
``irr / (irr + half_sat)``, giving a depolarising photocurrent ``max_current * open``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.signal import lfilter

from acquisition.sim.config import ElectricalResponseConfig, OpticalResponseConfig
from acquisition.sim.stimulus import ElectricalStimulus, OpticalStimulus
from bci.errors import SimulationError


@dataclass
class ActiveStimulus:
    """A stimulus being delivered: per-sample time courses and their spatial weights.

    ``drive`` ``(T,)`` multiplies ``neuron_weights`` into neuron currents; ``artifact``
    ``(T,)`` multiplies ``channel_weights`` into the recording; ``start`` is absolute.
    """

    start: int
    drive: np.ndarray
    neuron_weights: np.ndarray
    artifact: np.ndarray
    channel_weights: np.ndarray
    optical_site: int = -1  # index of the optical site, -1 for electrical

    @property
    def end(self) -> int:
        return self.start + max(len(self.drive), len(self.artifact))


class StimulationResponse:
    """Turns stimuli into per-sample neuron input and recording artifacts."""

    def __init__(
        self,
        electrical: ElectricalResponseConfig,
        optical: OpticalResponseConfig,
        neuron_xyz: np.ndarray,
        electrode_xy: np.ndarray,
        stim_gain: np.ndarray,
        opsin_max_current: np.ndarray,
        sample_rate_hz: float,
    ) -> None:
        self.electrical = electrical
        self.optical = optical
        self.sample_rate_hz = sample_rate_hz
        self.neuron_xyz = neuron_xyz
        self.electrode_xy = electrode_xy
        self.stim_gain = stim_gain
        self.opsin_max_current = opsin_max_current
        self.site_names = [s.name for s in optical.sites]
        site_xy = []
        for site in optical.sites:
            if site.electrode is not None:
                if site.electrode >= len(electrode_xy):
                    raise SimulationError(
                        f"optical site {site.name!r}: electrode {site.electrode} does not exist "
                        f"(probe has {len(electrode_xy)})"
                    )
                site_xy.append(electrode_xy[site.electrode])
            else:
                site_xy.append(np.asarray(site.position_um, dtype=float))
        self._site_xy = np.array(site_xy).reshape(-1, 2)
        # irradiance per mW at each neuron, (n_sites, n_neurons), mW/mm² per mW
        self.irradiance_per_mw = np.zeros((len(site_xy), len(neuron_xyz)))
        for k, site in enumerate(optical.sites):
            d = self._distance_to(self._site_xy[k], neuron_xyz)
            self.irradiance_per_mw[k] = (
                np.exp(-d / optical.attenuation_um)
                / (1.0 + (d / optical.spread_um) ** 2)
                / site.emitter_area_mm2
            )
        self._decay = float(np.exp(-1000.0 / (sample_rate_hz * electrical.artifact_decay_ms)))

    @staticmethod
    def _distance_to(xy: np.ndarray, neuron_xyz: np.ndarray) -> np.ndarray:
        diff = neuron_xyz.copy()
        diff[:, :2] -= xy
        return np.linalg.norm(diff, axis=1)

    def electrical_stimulus(self, stim: ElectricalStimulus, start: int) -> ActiveStimulus:
        n_e = len(self.electrode_xy)
        bad = [e for e in stim.electrodes if not 0 <= e < n_e]
        if bad:
            raise SimulationError(
                f"electrodes {bad} do not exist (probe has {n_e})", electrodes=stim.electrodes
            )
        cfg = self.electrical
        current = stim.waveform_ua(self.sample_rate_hz)
        weights = np.zeros(len(self.neuron_xyz))
        channel_weights = np.zeros(n_e)
        for e in stim.electrodes:
            d = self._distance_to(self.electrode_xy[e], self.neuron_xyz)
            weights += self.stim_gain / (1.0 + (d / cfg.r0_um) ** 2)
            dc = np.linalg.norm(self.electrode_xy - self.electrode_xy[e], axis=1)
            channel_weights += cfg.artifact_uv_per_ua / (1.0 + dc / cfg.artifact_r0_um)
        tail = int(np.ceil(6 * cfg.artifact_decay_ms * self.sample_rate_hz / 1000.0))
        padded = np.concatenate([current, np.zeros(tail)])
        artifact = lfilter([1.0 - self._decay], [1.0, -self._decay], padded)
        return ActiveStimulus(
            start=start,
            drive=np.maximum(0.0, -current),
            neuron_weights=weights,
            artifact=artifact,
            channel_weights=channel_weights,
        )

    def optical_stimulus(self, stim: OpticalStimulus, start: int) -> ActiveStimulus:
        if stim.site not in self.site_names:
            raise SimulationError(
                f"unknown optical site {stim.site!r}; the rig has {self.site_names}",
                site=stim.site,
            )
        return ActiveStimulus(
            start=start,
            drive=stim.waveform_mw(self.sample_rate_hz),
            neuron_weights=np.zeros(0),
            artifact=np.zeros(0),
            channel_weights=np.zeros(0),
            optical_site=self.site_names.index(stim.site),
        )


@njit(cache=True, nogil=True)
def opsin_advance(
    open_frac: np.ndarray,
    irradiance: np.ndarray,
    neurons: np.ndarray,
    max_current: np.ndarray,
    half_sat: float,
    decay_on: float,
    decay_off: float,
    out: np.ndarray,
) -> None:
    """Advance opsin open fractions of ``neurons`` over ``irradiance`` ``(T, n)``;
    add the photocurrent into ``out`` ``(T, n)``."""
    for t in range(irradiance.shape[0]):
        for k in range(neurons.shape[0]):
            j = neurons[k]
            irr = irradiance[t, j]
            if irr > 0.0:
                target = irr / (irr + half_sat)
                open_frac[k] = target + (open_frac[k] - target) * decay_on
            else:
                open_frac[k] *= decay_off
            out[t, j] += max_current[j] * open_frac[k]
