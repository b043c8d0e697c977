"""A closed-loop cursor task with a simulated cosine-tuned Poisson population.

96 units (by default) fire ``rate = baseline + depth * (pd · v)`` Hz (clipped at 0) for
the intended 2-D velocity ``v``, with motor-cortex-like baselines (5-20 Hz) and depths
(5-15 Hz per unit speed). The simulated user aims at a target: ``v = gain (target -
cursor)``, speed-limited; the cursor moves with the *decoded* velocity, so the loop is
closed. Spikes go through the real pipeline: SpikeBatch -> BinnedCounts -> decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bci.types import SpikeBatch, empty_spikes
from decoders.adaptive.base import AdaptiveDecoder
from decoders.features import BinnedCounts, CountFeaturesParams
from decoders.frames import Intention

FS = 30_000.0


@dataclass
class Population:
    n_units: int = 96
    seed: int = 0
    baseline: np.ndarray = field(init=False)
    depth: np.ndarray = field(init=False)
    pd: np.ndarray = field(init=False)
    alive: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 1])
        self.baseline = rng.uniform(5.0, 20.0, self.n_units)
        self.depth = rng.uniform(5.0, 15.0, self.n_units)
        self.pd = rng.uniform(0.0, 2 * np.pi, self.n_units)
        self.alive = np.ones(self.n_units, bool)

    def rates(self, v: np.ndarray) -> np.ndarray:
        tuning = np.cos(self.pd) * v[0] + np.sin(self.pd) * v[1]
        return np.maximum(self.baseline + self.depth * tuning, 0.0) * self.alive

    def perturb(
        self, rotation_deg: float, silence_fraction: float, rng: np.random.Generator
    ) -> None:
        self.pd = self.pd + np.deg2rad(rotation_deg)
        silenced = rng.choice(self.n_units, round(silence_fraction * self.n_units), replace=False)
        self.alive[silenced] = False


@dataclass
class CursorTask:
    """Run ``decoder`` in closed loop; record true (intended) and decoded velocity per bin."""

    decoder: AdaptiveDecoder
    population: Population
    seed: int = 0
    bin_ms: float = 50.0
    gain: float = 2.0
    max_speed: float = 1.0
    refit_labels: bool = False
    true_v: list[np.ndarray] = field(default_factory=list)
    decoded_v: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 2])
        self.features = BinnedCounts(
            CountFeaturesParams(bin_ms=self.bin_ms), self.population.n_units, FS
        )
        self.bin_len = round(self.bin_ms * FS / 1000)
        self.cursor = np.zeros(2)
        self.target = self._new_target()
        self.since_target = 0.0
        self.sample = 0

    def _new_target(self) -> np.ndarray:
        r, a = np.sqrt(self.rng.uniform()), self.rng.uniform(0, 2 * np.pi)
        return np.array([r * np.cos(a), r * np.sin(a)])

    def step(self) -> None:
        dt = self.bin_ms / 1000.0
        v = self.gain * (self.target - self.cursor)
        speed = float(np.linalg.norm(v))
        if speed > self.max_speed:
            v *= self.max_speed / speed
        counts = self.rng.poisson(self.population.rates(v) * dt)
        units = np.repeat(np.arange(self.population.n_units), counts)
        samples = self.sample + np.sort(self.rng.integers(0, self.bin_len, units.size))
        order = np.argsort(samples, kind="stable")
        spikes = empty_spikes(units.size)
        spikes["sample"] = samples[order]
        spikes["unit"] = units[order]
        spikes["time"] = spikes["sample"] / FS
        batch = SpikeBatch(spikes, self.sample, self.sample + self.bin_len, self.sample / FS, FS)
        self.sample += self.bin_len
        frame = self.features.process(batch)
        intention = Intention(
            velocity=np.repeat(v[None], len(frame), 0),
            target=np.repeat(self.target[None], len(frame), 0),
            cursor=np.repeat(self.cursor[None], len(frame), 0),
        )
        out = self.decoder.process(frame, intention)
        for row in out.values:
            self.true_v.append(v.copy())
            self.decoded_v.append(row.copy())
            self.cursor = np.clip(self.cursor + row * dt, -1.5, 1.5)
        self.since_target += dt
        if np.linalg.norm(self.target - self.cursor) < 0.1 or self.since_target > 4.0:
            if self.since_target > 4.0:
                self.cursor = np.zeros(2)
            self.target = self._new_target()
            self.since_target = 0.0

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * 1000 / self.bin_ms)):
            self.step()

    def r2(self, t0: float, t1: float) -> float:
        """Pooled R² of decoded vs intended velocity over bins in ``[t0, t1)`` s."""
        i0, i1 = round(t0 * 1000 / self.bin_ms), round(t1 * 1000 / self.bin_ms)
        y = np.array(self.true_v[i0:i1])
        yhat = np.array(self.decoded_v[i0:i1])
        return float(1.0 - np.sum((yhat - y) ** 2) / np.sum((y - y.mean(axis=0)) ** 2))
