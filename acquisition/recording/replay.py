"""Replay a recording: offline straight into stages, or as a live LSL outlet.

Offline (:func:`replay_offline`): chunks go through a chain of stages as fast as
possible. A stage is any object with ``process(x) -> y`` (rule 2); the output of one
stage is the input of the next, and a stage returning ``None`` ends the chain for that
chunk. ``on_output(chunk, output)`` sees the last stage's output (for example a
:class:`~bci.types.SpikeBatch` from :class:`~acquisition.pipeline.OnlinePipeline`).
Chunks carry the recording's absolute sample indices and recorded LSL times, so a
deterministic pipeline fed the same chunks makes the same decisions as it did
online (the closed-loop determinism test replays a session this way).

LSL (:func:`replay_lsl`): a :class:`~acquisition.lsl.outlet.RawOutlet` with the XDF
channel meta-data, paced on the LSL clock at ``speed`` times real time (``speed=0``:
as fast as possible). Samples are stamped with the LSL time at which they are due
(``origin + (k - k0) / (rate * speed)``), as an amplifier would stamp them, so any
live consumer sees the replay as a rig.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from acquisition.lsl.outlet import RawOutlet, raw_stream_info
from acquisition.recording.sources import RecordingSource
from bci.clock import now
from bci.types import Chunk

log = logging.getLogger(__name__)


class Stage(Protocol):
    def process(self, item: Any) -> Any: ...


@dataclass
class ReplayStats:
    """What a replay sent. ``wall_s`` on the performance counter (throughput only)."""

    samples: int = 0
    chunks: int = 0
    outputs: int = 0
    wall_s: float = 0.0
    late_chunks: int = 0
    max_lag_s: float = 0.0
    sample_rate: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.duration_s / self.wall_s if self.wall_s > 0 else float("inf")


def chunk_samples_for(source: RecordingSource, chunk_ms: float) -> int:
    return max(1, round(chunk_ms * source.sample_rate / 1000.0))


def replay_offline(
    source: RecordingSource,
    stages: Sequence[Stage],
    *,
    chunk_samples: int,
    on_output: Callable[[Chunk, Any], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    max_samples: int | None = None,
) -> ReplayStats:
    """Push every chunk of ``source`` through ``stages`` in order, as fast as possible.

    ``on_progress(samples_done)`` is called after each chunk (for a progress bar);
    ``max_samples`` stops early.
    """
    stats = ReplayStats(sample_rate=source.sample_rate)
    t0 = time.perf_counter()
    for chunk in source.chunks(chunk_samples):
        item: Any = chunk
        for stage in stages:
            item = stage.process(item)
            if item is None:
                break
        if item is not None and stages:
            stats.outputs += 1
            if on_output is not None:
                on_output(chunk, item)
        stats.samples += chunk.n_samples
        stats.chunks += 1
        if on_progress is not None:
            on_progress(stats.samples)
        if max_samples is not None and stats.samples >= max_samples:
            break
    stats.wall_s = time.perf_counter() - t0
    return stats


def replay_outlet(
    source: RecordingSource,
    *,
    name: str = "bci-replay",
    stream_type: str = "ExtracellularEphys",
    source_id: str = "bci-replay",
    chunk_samples: int = 30,
) -> RawOutlet:
    """A raw LSL outlet describing ``source`` (labels, µV, electrode locations)."""
    import numpy as np

    positions = np.column_stack([source.positions_um, np.zeros(source.n_channels)])
    info = raw_stream_info(
        name,
        stream_type,
        source_id,
        source.sample_rate,
        source.channel_ids,
        positions,
        manufacturer="bci-loop replay",
        extra={"replay_of": source.name},
    )
    return RawOutlet(info, chunk_size=chunk_samples)


def replay_lsl(
    source: RecordingSource,
    outlet: RawOutlet,
    *,
    chunk_samples: int,
    speed: float = 1.0,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Push ``source`` to ``outlet`` paced at ``speed`` times real time (0: unpaced).

    Each chunk is pushed when its last sample is due on the LSL clock; chunks are
    re-stamped with those due times. ``stop`` ends the replay after the current chunk.
    """
    if speed < 0:
        raise ValueError("speed must be >= 0")
    stats = ReplayStats(sample_rate=source.sample_rate)
    rate = source.sample_rate * speed if speed > 0 else source.sample_rate
    wall0 = time.perf_counter()
    origin: float | None = None
    k0 = 0
    sent = 0  # samples sent, the pacing position (gaps in the source are not waited for)
    for chunk in source.chunks(chunk_samples):
        if stop is not None and stop.is_set():
            break
        if origin is None:
            k0 = chunk.first_sample
            origin = now() + chunk.n_samples / rate
        if speed > 0:
            stamp = origin + sent / rate
            due = stamp + (chunk.n_samples - 1) / rate
            lag = now() - due
            if lag < 0:
                time.sleep(-lag)
            else:
                stats.max_lag_s = max(stats.max_lag_s, lag)
                if lag > chunk.n_samples / rate:
                    stats.late_chunks += 1
        else:
            stamp = now()
        outlet.push(Chunk(chunk.data, chunk.first_sample, stamp, rate))
        sent += chunk.n_samples
        stats.samples += chunk.n_samples
        stats.chunks += 1
        if on_progress is not None:
            on_progress(stats.samples)
    stats.wall_s = time.perf_counter() - wall0
    log.info("replayed %d samples from sample %d over LSL", stats.samples, k0)
    return stats
