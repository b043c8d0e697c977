"""Streams a simulated rig over LSL, paced on the LSL clock or as fast as possible.

The rig runs in its own thread (numerical kernels release the GIL), so stimulation
drivers on an asyncio loop can call ``rig.stimulate`` while it streams. In real-time
pacing, sample ``k`` has LSL time ``origin + k / rate`` and each chunk is pushed once
its last sample is due, as an amplifier would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from acquisition.lsl.outlet import EventOutlet, RawOutlet, event_stream_info, raw_stream_info
from acquisition.sim.rig import RigChunk, SimulatedRig
from bci.clock import now, tight_timers

log = logging.getLogger(__name__)

GT_FIELDS = ("neuron", "sample")


@dataclass
class StreamStats:
    """What a streaming run sent. Times in s (LSL clock)."""

    samples: int = 0
    chunks: int = 0
    ground_truth_spikes: int = 0
    stimuli: int = 0
    late_chunks: int = 0
    max_lag_s: float = 0.0
    wall_s: float = 0.0
    spikes_per_population: dict[str, int] = field(default_factory=dict)

    def simulated_s(self, sample_rate_hz: float) -> float:
        return self.samples / sample_rate_hz

    def realtime_factor(self, sample_rate_hz: float) -> float:
        """Simulated seconds per wall second."""
        return self.simulated_s(sample_rate_hz) / self.wall_s if self.wall_s > 0 else float("inf")


def default_source_id(rig_id: str) -> str:
    return f"bci-{rig_id}-simrig"


class RigStreamer:
    """Runs a :class:`SimulatedRig` and pushes its output to LSL outlets.

    ``on_chunk`` (optional) is called with every :class:`RigChunk` in the rig's thread,
    for in-process consumers. ``stream=False`` runs without LSL (benchmarks, tests).
    """

    def __init__(
        self,
        rig: SimulatedRig,
        rig_id: str = "rig0",
        *,
        stream: bool = True,
        on_chunk: Callable[[RigChunk], None] | None = None,
    ) -> None:
        self.rig = rig
        self.rig_id = rig_id
        self.on_chunk = on_chunk
        cfg = rig.config.stream
        self.source_id = cfg.source_id or default_source_id(rig_id)
        self.raw: RawOutlet | None = None
        self.gt: EventOutlet | None = None
        if stream:
            positions = np.column_stack([rig.electrode_xy, np.zeros(rig.n_channels)])
            self.raw = RawOutlet(
                raw_stream_info(
                    cfg.name,
                    cfg.type,
                    self.source_id,
                    rig.sample_rate_hz,
                    rig.channel_labels,
                    positions,
                    manufacturer="bci-loop simulated rig",
                    extra={
                        "rig": rig_id,
                        "counter_channel": "0" if cfg.counter_channel else "none",
                        "seed": str(rig.config.seed),
                    },
                ),
                chunk_size=rig.config.chunk_samples,
            )
            if cfg.ground_truth:
                self.gt = EventOutlet(
                    event_stream_info(
                        f"{cfg.name}-GroundTruth",
                        "SpikeGroundTruth",
                        f"{self.source_id}-gt",
                        GT_FIELDS,
                    )
                )
        self.stats = StreamStats(spikes_per_population={p.name: 0 for p in rig.populations})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pop_bounds = np.array([p.hi for p in rig.populations])

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the streaming loop to end after the current chunk."""
        self._stop.set()

    def start(self, duration_s: float | None = None) -> None:
        """Run :meth:`run` in a background thread."""
        self._thread = threading.Thread(
            target=self._run_guarded, args=(duration_s,), name=f"simrig-{self.rig_id}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> StreamStats:
        """Wait for the background thread; re-raise its error if it failed."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self.stats

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_guarded(self, duration_s: float | None) -> None:
        try:
            self.run(duration_s)
        except BaseException as exc:  # reported through join()
            log.exception("simulated rig %s failed", self.rig_id)
            self._error = exc

    # ------------------------------------------------------------------ loop

    def run(self, duration_s: float | None = None) -> StreamStats:
        """Stream until ``duration_s`` simulated seconds have been sent or :meth:`stop`."""
        rig = self.rig
        rate = rig.sample_rate_hz
        n = rig.config.chunk_samples
        total = None if duration_s is None else round(duration_s * rate)
        realtime = rig.config.pacing == "realtime"
        if realtime:
            tight_timers()  # each chunk leaves within µs of its last sample's time
        lead = n / rate  # first chunk due one chunk from now
        rig.origin = now() + lead - rig.next_sample / rate
        wall0 = time.perf_counter()
        while not self._stop.is_set():
            if total is not None:
                remaining = total - self.stats.samples
                if remaining <= 0:
                    break
                size = min(n, remaining)
            else:
                size = n
            out = rig.process(size)
            chunk = out.chunk
            if realtime:
                due = chunk.timestamp + (chunk.n_samples - 1) / rate
                lag = now() - due
                if lag < 0:
                    time.sleep(-lag)
                else:
                    self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
                    if lag > chunk.n_samples / rate:
                        self.stats.late_chunks += 1
            self._emit(out)
        self.stats.wall_s = time.perf_counter() - wall0
        return self.stats

    def _emit(self, out: RigChunk) -> None:
        chunk = out.chunk
        if self.raw is not None:
            self.raw.push(chunk)
        gt = out.ground_truth
        if len(gt):
            if self.gt is not None:
                rows = np.column_stack([gt["neuron"], gt["sample"]]).astype(np.float64)
                self.gt.push(rows, chunk.time_of(gt["sample"]))  # type: ignore[arg-type]
            pops = np.searchsorted(self._pop_bounds, gt["neuron"], side="right")
            for k, count in zip(*np.unique(pops, return_counts=True), strict=True):
                name = self.rig.populations[int(k)].name
                self.stats.spikes_per_population[name] += int(count)
        self.stats.samples += chunk.n_samples
        self.stats.chunks += 1
        self.stats.ground_truth_spikes += len(gt)
        self.stats.stimuli += len(out.stim_starts)
        if self.on_chunk is not None:
            self.on_chunk(out)

    def close(self) -> None:
        """Close the outlets (consumers see the stream disappear)."""
        for outlet in (self.raw, self.gt):
            if outlet is not None:
                outlet.close()
        self.raw = None
        self.gt = None
