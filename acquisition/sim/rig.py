"""The simulated rig: populations of model neurons next to a probe, recorded in µV.

:class:`SimulatedRig` is a synchronous stage: ``process(n_samples)`` simulates the
next ``n_samples`` and returns a :class:`RigChunk` (the recorded chunk and the
ground-truth spikes whose trough lies inside it). ``stimulate(stimulus)`` and
``stop_stimulation()`` are thread-safe, so stimulation drivers on an event loop can
drive a rig that runs in its own thread. Pacing and streaming live in
:mod:`acquisition.sim.streamer`.

For a given config (seed included) the output is deterministic, whatever the block
sizes passed to ``process``, as long as stimuli arrive at the same samples.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from acquisition.sim.config import SimRigConfig
from acquisition.sim.network import Synapses, build_synapses, deliver_spikes
from acquisition.sim.neurons import NeuronModel, SynapseBlock, model_class
from acquisition.sim.neurons.base import SYN_CONDUCTANCE, SYN_CURRENT
from acquisition.sim.probe import build_probe, electrode_positions
from acquisition.sim.response import ActiveStimulus, StimulationResponse, opsin_advance
from acquisition.sim.signal import (
    Footprints,
    NoiseGenerator,
    add_spikes,
    emit_samples,
    fill_rows,
    make_footprints,
)
from acquisition.sim.stimulus import ElectricalStimulus, OpticalStimulus, Stimulus
from bci.types import GT_SPIKE_DTYPE, Chunk

#: Channel 0 carries ``sample index mod 2**24`` when the counter is on (exact in float32).
COUNTER_MODULUS = 1 << 24


@dataclass(frozen=True, slots=True)
class RigChunk:
    """One block of the rig's output.

    ``chunk``: the recorded samples (µV); ``ground_truth``: :data:`GT_SPIKE_DTYPE` rows
    whose trough sample lies inside the chunk; ``stim_starts``: absolute start samples
    of stimuli that began inside the chunk.
    """

    chunk: Chunk
    ground_truth: np.ndarray
    stim_starts: tuple[int, ...] = ()


@dataclass
class _Population:
    name: str
    model: NeuronModel
    lo: int
    hi: int
    bias: np.ndarray
    noise_std: float
    syn: SynapseBlock
    spikes: np.ndarray


class SimulatedRig:
    """A deterministic simulated recording with a response to stimulation.

    Consumes nothing; produces float32 µV chunks of ``n_channels`` (the probe's
    contacts) at ``sample_rate_hz`` plus ground-truth spikes (neuron, trough sample).
    """

    def __init__(self, config: SimRigConfig) -> None:
        self.config = config
        self.sample_rate_hz = float(config.sample_rate_hz)
        self.dt_ms = 1000.0 / self.sample_rate_hz
        seeds = np.random.SeedSequence(config.seed).spawn(4 + len(config.populations))
        build_rng = np.random.default_rng(seeds[0])
        self._noise_rng = np.random.default_rng(seeds[1])
        # one generator per population, so the draws never interleave differently
        drive_seeds = seeds[2].spawn(len(config.populations))
        self._drive_rngs = [np.random.default_rng(sq) for sq in drive_seeds]

        self.probe = build_probe(config.probe)
        self.electrode_xy = electrode_positions(self.probe)
        self.n_channels = self.electrode_xy.shape[0]
        self.neuron_xyz = self._place_neurons(build_rng)
        self.n_neurons = config.n_neurons
        # its own generator: changing the wiring leaves every neuron as it was
        self.synapses: Synapses = build_synapses(config, np.random.default_rng(seeds[3]))
        self.footprints: Footprints = make_footprints(
            self.neuron_xyz, self.electrode_xy, config.waveforms, self.sample_rate_hz, build_rng
        )
        self.noise = NoiseGenerator(config.noise, self.n_channels, self._noise_rng)

        self._block = self.synapses.min_delay or 10 * config.chunk_samples
        # a whole number of blocks: a slice never wraps, so it reads its rows in place
        blocks = -(-(self.synapses.max_delay + self._block + 1) // self._block)
        ring_rows = blocks * self._block
        self._ring_e = np.zeros((ring_rows, self.n_neurons))
        self._ring_i = np.zeros((ring_rows, self.n_neurons))

        syn_cfg = config.synapses
        mode = SYN_CONDUCTANCE if syn_cfg.mode == "conductance" else SYN_CURRENT
        decay_e = float(np.exp(-self.dt_ms / syn_cfg.tau_exc_ms))
        decay_i = float(np.exp(-self.dt_ms / syn_cfg.tau_inh_ms))
        self.populations: list[_Population] = []
        stim_gain = np.zeros(self.n_neurons)
        opsin_current = np.zeros(self.n_neurons)
        lo = 0
        for k, pop_cfg in enumerate(config.populations):
            cls = model_class(pop_cfg.model.kind)
            hi = lo + pop_cfg.count
            model = cls(pop_cfg.model, pop_cfg.count, np.random.default_rng(seeds[4 + k]))
            mean = cls.default_drive if pop_cfg.drive.mean is None else pop_cfg.drive.mean
            bias = mean * (1.0 + pop_cfg.drive.spread * build_rng.standard_normal(pop_cfg.count))
            syn = SynapseBlock(
                ge=np.zeros(pop_cfg.count),
                gi=np.zeros(pop_cfg.count),
                ge_in=np.zeros((self._block, pop_cfg.count)),
                gi_in=np.zeros((self._block, pop_cfg.count)),
                decay_e=decay_e,
                decay_i=decay_i,
                mode=mode,
                e_exc=syn_cfg.e_exc_mv,
                e_inh=syn_cfg.e_inh_mv,
            )
            self.populations.append(
                _Population(
                    name=pop_cfg.name,
                    model=model,
                    lo=lo,
                    hi=hi,
                    bias=bias,
                    noise_std=pop_cfg.drive.noise_std,
                    syn=syn,
                    spikes=np.zeros((self._block * pop_cfg.count, 2), dtype=np.int64),
                )
            )
            stim_gain[lo:hi] = (
                cls.default_stim_gain if pop_cfg.stim_gain is None else pop_cfg.stim_gain
            )
            if pop_cfg.opsin is not None:
                expressing = build_rng.random(pop_cfg.count) < pop_cfg.opsin.fraction
                max_current = pop_cfg.opsin.max_current or 3.0 * abs(cls.default_drive)
                opsin_current[lo:hi] = np.where(expressing, max_current, 0.0)
            lo = hi
        self._bias = np.concatenate([p.bias for p in self.populations])
        self._noise_std = np.concatenate(
            [np.full(p.hi - p.lo, p.noise_std) for p in self.populations]
        )
        self._noise_interval = np.array(
            [
                max(1, round(c.drive.noise_interval_ms / self.dt_ms))
                for c in config.populations
                for _ in range(c.count)
            ],
            dtype=np.int64,
        )
        self._noisy_pops = [
            (p, int(self._noise_interval[p.lo]), self._drive_rngs[k])
            for k, p in enumerate(self.populations)
            if p.noise_std > 0
        ]
        self._noise_value = np.zeros(self.n_neurons)
        self._i_ext = np.empty((config.chunk_samples, self.n_neurons))
        self._ge_in = np.zeros((self._block, self.n_neurons))
        self._gi_in = np.zeros((self._block, self.n_neurons))
        self._delivered = 0

        self.response = StimulationResponse(
            config.stimulation.electrical,
            config.stimulation.optical,
            self.neuron_xyz,
            self.electrode_xy,
            stim_gain,
            opsin_current,
            self.sample_rate_hz,
        )
        self._opsin_neurons = np.nonzero(opsin_current > 0)[0].astype(np.int64)
        self._opsin_open = np.zeros(self._opsin_neurons.size)
        self._opsin_max = opsin_current
        opsin_cfg = next((p.opsin for p in config.populations if p.opsin is not None), None)
        self._opsin_half_sat = opsin_cfg.half_sat_mw_mm2 if opsin_cfg else 1.0
        self._opsin_decay_on = float(
            np.exp(-self.dt_ms / (opsin_cfg.tau_on_ms if opsin_cfg else 1))
        )
        self._opsin_decay_off = float(
            np.exp(-self.dt_ms / (opsin_cfg.tau_off_ms if opsin_cfg else 1))
        )

        self._lock = threading.Lock()
        self._pending: list[ActiveStimulus] = []
        self._active: list[ActiveStimulus] = []
        self._acc = np.zeros((0, self.n_channels), dtype=np.float32)
        self._gt_pending = np.zeros(0, dtype=GT_SPIKE_DTYPE)
        self.next_sample = 0
        #: LSL-clock time (s) of sample 0; set by whoever paces the rig.
        self.origin = 0.0
        #: spikes emitted per neuron since the start (for rates and tests)
        self.spike_counts = np.zeros(self.n_neurons, dtype=np.int64)

    # ------------------------------------------------------------------ building

    def _place_neurons(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config.placement
        lo = self.electrode_xy.min(axis=0) - cfg.margin_um
        hi = self.electrode_xy.max(axis=0) + cfg.margin_um
        n = self.config.n_neurons
        xy = rng.uniform(lo, hi, size=(n, 2))
        z = rng.uniform(cfg.depth_um[0], cfg.depth_um[1], size=n)
        return np.column_stack([xy, z])

    @property
    def population_slices(self) -> dict[str, slice]:
        """Global neuron index range of each population."""
        return {p.name: slice(p.lo, p.hi) for p in self.populations}

    @property
    def channel_labels(self) -> list[str]:
        return [f"e{i}" for i in range(self.n_channels)]

    # ------------------------------------------------------------------ stimulation

    def stimulate(self, stimulus: Stimulus) -> int:
        """Schedule a stimulus; return the absolute sample at which it starts.

        Thread-safe. Starts at ``stimulus.start_sample`` or, if that is past or unset,
        at the first sample not yet simulated. Raises
        :class:`~bci.errors.SimulationError` for electrodes or sites the rig lacks.
        """
        with self._lock:
            start = max(self.next_sample, stimulus.start_sample or 0)
            if isinstance(stimulus, ElectricalStimulus):
                active = self.response.electrical_stimulus(stimulus, start)
            elif isinstance(stimulus, OpticalStimulus):
                active = self.response.optical_stimulus(stimulus, start)
            else:
                raise TypeError(f"not a stimulus: {stimulus!r}")
            self._pending.append(active)
            return start

    def stop_stimulation(self) -> None:
        """Stop all stimulation now (the safe state): pending and running stimuli end."""
        with self._lock:
            self._pending.clear()
            self._active.clear()

    @property
    def stimulating(self) -> bool:
        """True while any stimulus is scheduled or being delivered."""
        with self._lock:
            return bool(self._pending or self._active)

    # ------------------------------------------------------------------ simulation

    def process(self, n_samples: int) -> RigChunk:
        """Simulate the next ``n_samples`` samples."""
        n = int(n_samples)
        t0 = self.next_sample
        with self._lock:
            if self._pending:
                self._active.extend(self._pending)
                self._pending.clear()
            if self._active:
                self._active = [s for s in self._active if s.end > t0]
            active = list(self._active)
            # claim the samples now, so a stimulus arriving during the simulation
            # starts after this chunk rather than inside it
            self.next_sample = t0 + n
        stim_starts = tuple(s.start for s in active if t0 <= s.start < t0 + n)

        width = self.footprints.length
        if self._acc.shape[0] < n + width:
            grown = np.zeros((n + width, self.n_channels), dtype=np.float32)
            grown[: self._acc.shape[0]] = self._acc
            self._acc = grown
        if self._i_ext.shape[0] < n:
            self._i_ext = np.empty((n, self.n_neurons))
        i_ext = self._i_ext[:n]
        self._fill_drive(t0, n, i_ext)
        if active or self._opsin_open.any():
            self._apply_stimuli(active, t0, n, i_ext)

        steps_parts: list[np.ndarray] = []
        neuron_parts: list[np.ndarray] = []
        start = 0
        while start < n:
            # slices end at absolute multiples of the block, so the order of every
            # floating-point operation is the same whatever chunk sizes the caller uses
            first = t0 + start
            length = min(self._block - first % self._block, n - start)
            if self.synapses.n_synapses:
                # this slice's arrival rows, in place (no delivery can land in them: every
                # delay is at least one block)
                row = first % self._ring_e.shape[0]
                ge_all = self._ring_e[row : row + length]
                gi_all = self._ring_i[row : row + length]
            else:
                ge_all = self._ge_in[:length]
                gi_all = self._gi_in[:length]
            delivered = len(steps_parts)
            for pop in self.populations:
                syn = pop.syn
                syn.ge_in = ge_all[:, pop.lo : pop.hi]
                syn.gi_in = gi_all[:, pop.lo : pop.hi]
                k = pop.model.advance(
                    i_ext[start : start + length, pop.lo : pop.hi], syn, self.dt_ms, pop.spikes
                )
                if k:
                    steps_parts.append(pop.spikes[:k, 0] + first)
                    neuron_parts.append(pop.spikes[:k, 1] + pop.lo)
            if self.synapses.n_synapses:
                ge_all[:] = 0.0  # consumed: the rows are reused one ring turn later
                gi_all[:] = 0.0
            if self.synapses.n_synapses and len(steps_parts) > delivered:
                steps, neurons = _in_order(steps_parts[delivered:], neuron_parts[delivered:])
                tab = self.synapses
                deliver_spikes(
                    steps,
                    neurons,
                    steps.size,
                    tab.indptr,
                    tab.post,
                    tab.weight,
                    tab.delay,
                    self._ring_e,
                    self._ring_i,
                )
            start += length

        data = np.empty((n, self.n_channels), dtype=np.float32)
        self.noise.generate_into(data)
        if steps_parts:
            steps, neurons = _in_order(steps_parts, neuron_parts)
            fp = self.footprints
            add_spikes(
                self._acc,
                steps - t0,
                neurons,
                steps.size,
                fp.shapes,
                fp.indptr,
                fp.channels,
                fp.amplitudes,
                self.spike_counts,
            )
            self._queue_ground_truth(steps + fp.trough, neurons)
        emit_samples(self._acc, data, width)
        if active:
            self._add_artifacts(active, t0, n, data)
        if self.config.stream.counter_channel:
            data[:, 0] = (np.arange(t0, t0 + n) % COUNTER_MODULUS).astype(np.float32)

        chunk = Chunk(
            data=data,
            first_sample=t0,
            timestamp=self.origin + t0 / self.sample_rate_hz,
            sample_rate=self.sample_rate_hz,
        )
        return RigChunk(
            chunk=chunk, ground_truth=self._take_ground_truth(t0 + n), stim_starts=stim_starts
        )

    def _queue_ground_truth(self, troughs: np.ndarray, neurons: np.ndarray) -> None:
        new = np.empty(troughs.size, dtype=GT_SPIKE_DTYPE)
        new["sample"] = troughs
        new["neuron"] = neurons  # already in (sample, neuron) order
        if self._gt_pending.size:
            new = np.concatenate([self._gt_pending, new])
        self._gt_pending = new

    def _take_ground_truth(self, end: int) -> np.ndarray:
        """Ground-truth rows whose trough lies before ``end`` (they are sorted by sample)."""
        cut = int(np.searchsorted(self._gt_pending["sample"], end))
        ready = self._gt_pending[:cut]
        self._gt_pending = self._gt_pending[cut:]
        return ready

    def _fill_drive(self, t0: int, n: int, i_ext: np.ndarray) -> None:
        """Tonic drive plus each noisy population's held noise, redrawn at the absolute
        multiples of its interval (so the result does not depend on chunk sizes)."""
        t = t0
        while t < t0 + n:
            end = t0 + n
            for pop, interval, rng in self._noisy_pops:
                if t % interval == 0:
                    self._noise_value[pop.lo : pop.hi] = pop.noise_std * rng.standard_normal(
                        pop.hi - pop.lo
                    )
                end = min(end, (t // interval + 1) * interval)
            fill_rows(i_ext, t - t0, end - t0, self._bias, self._noise_value)
            t = end

    def _apply_stimuli(
        self, active: list[ActiveStimulus], t0: int, n: int, i_ext: np.ndarray
    ) -> None:
        optical_power = None
        for stim in active:
            a = max(t0, stim.start)
            b = min(t0 + n, stim.start + len(stim.drive))
            if b <= a:
                continue
            seg = stim.drive[a - stim.start : b - stim.start]
            if stim.optical_site < 0:
                if np.any(seg):
                    i_ext[a - t0 : b - t0] += np.outer(seg, stim.neuron_weights)
            else:
                if optical_power is None:
                    optical_power = np.zeros((n, len(self.response.site_names)))
                optical_power[a - t0 : b - t0, stim.optical_site] += seg
        if self._opsin_neurons.size and (optical_power is not None or self._opsin_open.any()):
            if optical_power is None:
                irradiance = np.zeros((n, self.n_neurons))
            else:
                irradiance = optical_power @ self.response.irradiance_per_mw
            opsin_advance(
                self._opsin_open,
                irradiance,
                self._opsin_neurons,
                self._opsin_max,
                self._opsin_half_sat,
                self._opsin_decay_on,
                self._opsin_decay_off,
                i_ext,
            )
            self._opsin_open[self._opsin_open < 1e-6] = 0.0

    def _add_artifacts(
        self, active: list[ActiveStimulus], t0: int, n: int, data: np.ndarray
    ) -> None:
        limit = self.config.stimulation.electrical.artifact_max_uv
        touched = False
        for stim in active:
            if stim.optical_site >= 0:
                continue
            a = max(t0, stim.start)
            b = min(t0 + n, stim.start + len(stim.artifact))
            if b <= a:
                continue
            seg = stim.artifact[a - stim.start : b - stim.start]
            data[a - t0 : b - t0] += np.outer(seg, stim.channel_weights).astype(np.float32)
            touched = True
        if touched:
            np.clip(data, -limit, limit, out=data)


def _in_order(
    steps_parts: list[np.ndarray], neuron_parts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Spikes sorted by (step, neuron): the one order in which their contributions are
    summed, whatever chunk boundaries split the simulation (float sums depend on it)."""
    steps = np.concatenate(steps_parts)
    neurons = np.concatenate(neuron_parts)
    order = np.lexsort((neurons, steps))
    return steps[order], neurons[order]


def warm_up(config: SimRigConfig) -> None:
    """Compile (or load from cache) every kernel ``config`` will use, before streaming.

    Runs a miniature rig (two neurons per population) with the same probe, neuron
    models, synapse mode, population layout, connectivity and stimulation paths, so
    no compilation lands in the real-time loop.
    """
    pops = [
        p.model_copy(
            update={
                "count": 2,
                "opsin": None if p.opsin is None else p.opsin.model_copy(update={"fraction": 1.0}),
            }
        )
        for p in config.populations
    ]
    connections = [c.model_copy(update={"probability": 1.0}) for c in config.connections]
    mini = config.model_copy(
        update={"populations": pops, "connections": connections, "edge_list": None}
    )
    rig = SimulatedRig(mini)
    n = config.chunk_samples
    rig.process(n)
    rig.stimulate(
        ElectricalStimulus(electrodes=(0,), amplitudes_ua=(1.0, 1.0), widths_us=(100.0, 100.0))
    )
    if rig.response.site_names:
        site = rig.response.site_names[0]
        rig.stimulate(OpticalStimulus(site=site, power_mw=1.0, pulse_width_ms=1.0))
    for _ in range(3):
        rig.process(n)
