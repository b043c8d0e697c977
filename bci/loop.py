"""The closed loop's hot path and its latency accounting.

:class:`HotPath` is one synchronous stage: a raw chunk in, the stimulation commands
to send out. Inside a chunk it runs acquisition (filter, detect, sort), the decoder and
the spiking readout, and the policies, without awaiting between them.
:class:`LatencyTracer` follows every command from the spike that caused it to the
driver's receipt and execution, all on the LSL clock, and breaks the latency into
stages:

* **chunk wait**: trough of the causing spike -> last sample of the chunk that
  carried enough samples after it to be labelled (filter delay, detection lookahead,
  chunk size);
* **LSL transport**: that last sample's time -> the chunk pulled from the inlet;
* **processing**: pulled -> command handed to the publisher (all stages + policy);
* **MQTT**: handed to the publisher -> received by the driver (queue, broker, network).
"""

from __future__ import annotations

import collections
import threading
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from acquisition.pipeline import OnlinePipeline
from bci.clock import now
from bci.schema import StrictModel
from bci.service import RestartPolicy
from bci.types import Chunk, SpikeBatch, empty_spikes
from decoders.frames import DecoderOutput
from decoders.pipeline import DecoderPipeline
from decoders.readout import SpikingReadout
from stimulators.commands import Ack
from stimulators.policies import AnyStimCommand, Policy, PolicyParams

# ---------------------------------------------------------------------- config


class SimRigSource(StrictModel):
    """The config's ``sim_rig`` runs in this process and streams over real LSL; the loop
    reads it back through an LSL inlet, as it would read an amplifier."""

    kind: Literal["sim_rig"] = "sim_rig"


class LslSource(StrictModel):
    """An existing LSL stream (a real amplifier, ``bci sim-rig``, ``bci replay``), found
    as ``acquisition.inlet`` says."""

    kind: Literal["lsl"] = "lsl"


SourceConfig = Annotated[SimRigSource | LslSource, Field(discriminator="kind")]


class LoopConfig(StrictModel):
    """The ``loop:`` section: where samples come from, what the loop decides, and how
    the runtime supervises it."""

    source: SourceConfig = SimRigSource()
    policies: list[PolicyParams] = Field(default_factory=list)
    sort: bool = True
    use_decoder: bool = Field(True, description="run the decoders: section when present")
    restart: RestartPolicy = RestartPolicy()
    max_raster_spikes: int = Field(2_000_000, ge=0, description="spikes kept for the report")
    poll_ahead_ms: float = Field(
        0.0,
        ge=0,
        le=10,
        description="0: the loop's thread sleeps until a chunk arrives. Above 0: it "
        "sleeps until this long before the next chunk is due, then polls for it without "
        "sleeping until this long after it was due (lower, steadier latency for about "
        "2 x this per chunk of one core)",
    )
    rehearse_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="0: off. Above 0: when this long has passed without a command, "
        "the loop's thread, after a chunk, puts a command made by each policy through "
        "the envelope's check and the encoding, and sends nothing. Code run only every "
        "few tens of ms has left the processor's cache by then and runs several times "
        "slower; this keeps the command path warm (a few % of one core)",
    )
    max_staleness_ms: float = Field(
        50.0,
        gt=0,
        description="chunks older than this when pulled go through every stage, but "
        "the commands they cause are suppressed (a catch-up after a stall never fires "
        "a burst); each suppression is logged",
    )


# ---------------------------------------------------------------------- latency


@dataclass
class Trace:
    """One command's journey; every time is LSL-clock seconds."""

    command_id: uuid.UUID
    device: str
    cause_time: float
    cause_sample: int
    chunk_end: float
    pulled: float
    submitted: float
    sent: float | None = None
    received: float | None = None
    executed: float | None = None
    start_sample: int | None = None
    status: str = "submitted"
    rule: str | None = None

    def stages_ms(self) -> dict[str, float] | None:
        if self.received is None:
            return None
        return {
            "chunk_wait": (self.chunk_end - self.cause_time) * 1e3,
            "lsl_transport": (self.pulled - self.chunk_end) * 1e3,
            "processing": (self.submitted - self.pulled) * 1e3,
            "mqtt": (self.received - self.submitted) * 1e3,
            "total": (self.received - self.cause_time) * 1e3,
        }


STAGES = ("chunk_wait", "lsl_transport", "processing", "mqtt", "total")

#: Fields of a command that depend on when it was made, not on the data.
TIMING_FIELDS = ("command_id", "deadline", "sent")


def decision(cmd: AnyStimCommand) -> dict[str, Any]:
    """A command as a decision: what to do and the sample that caused it, without its
    id, deadline, send time or the cause's LSL time (online that comes from each pull's
    timestamps, in a recording from each flushed block's), so the online run and a
    replay of its recording can be compared."""
    out = cmd.model_dump(mode="json", exclude=set(TIMING_FIELDS))
    out["cause"].pop("time", None)
    return out


class LatencyTracer:
    """Collects :class:`Trace` records from the hot path and the acks (thread-safe).

    Keeps the most recent ``max_traces`` commands (the latency figures cover them);
    the ack counts cover the whole run.
    """

    def __init__(self, max_traces: int = 200_000) -> None:
        self._lock = threading.Lock()
        # the most recent commands (oldest evicted): a daemon's memory stays bounded
        self._traces: collections.OrderedDict[uuid.UUID, Trace] = collections.OrderedDict()
        self._max = max_traces
        # spike -> driver receipt (ms) of the latest commands, for a live display that
        # must stay cheap however long the run
        self._recent_total_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.rejected_by_envelope = 0
        self.status_counts: dict[str, int] = {}
        self._early: collections.OrderedDict[uuid.UUID, list[Ack]] = collections.OrderedDict()

    def on_command(self, cmd: AnyStimCommand, chunk_end: float, pulled: float, at: float) -> None:
        trace = Trace(
            command_id=cmd.command_id,
            device=cmd.device,
            cause_time=cmd.cause.time,
            cause_sample=cmd.cause.sample,
            chunk_end=chunk_end,
            pulled=pulled,
            submitted=at,
        )
        with self._lock:
            self._traces[cmd.command_id] = trace
            if len(self._traces) > self._max:
                self._traces.popitem(last=False)
            for ack in self._early.pop(cmd.command_id, ()):
                self._apply(trace, ack)

    def on_rejected(self, cmd: AnyStimCommand, rule: str) -> None:
        with self._lock:
            self.rejected_by_envelope += 1
            trace = self._traces.get(cmd.command_id)
            if trace is not None:
                trace.status = "rejected_by_controller"
                trace.rule = rule

    def on_ack(self, ack: Ack) -> None:
        with self._lock:
            self.status_counts[ack.status] = self.status_counts.get(ack.status, 0) + 1
            if ack.command_id is None:
                return
            trace = self._traces.get(ack.command_id)
            if trace is None:
                # the hot path records a command after sending it: its first ack can
                # (rarely) come back first; it is applied when the command is recorded
                self._early.setdefault(ack.command_id, []).append(ack)
                if len(self._early) > 1_000:
                    self._early.popitem(last=False)
                return
            self._apply(trace, ack)

    def _apply(self, trace: Trace, ack: Ack) -> None:
        """Fold ``ack`` into ``trace`` (the caller holds the lock)."""
        if trace.received is None:
            self._recent_total_ms.append((ack.received - trace.cause_time) * 1e3)
        if trace.received is None or ack.received < trace.received:
            trace.received = ack.received
        trace.sent = ack.sent if ack.sent is not None else trace.sent
        if ack.status == "executed":
            trace.executed = ack.executed_at
            trace.start_sample = ack.start_sample
        if ack.status != "accepted":
            trace.status = ack.status
            trace.rule = ack.rule

    def recent_total_ms(self) -> np.ndarray:
        """Spike-to-driver latency (ms) of the last (up to) 10 000 commands received."""
        with self._lock:
            return np.array(self._recent_total_ms)

    def traces(self) -> list[Trace]:
        with self._lock:
            return list(self._traces.values())

    def executed(self) -> int:
        return self.status_counts.get("executed", 0)

    def stage_arrays(self) -> dict[str, np.ndarray]:
        """Milliseconds per stage over every command the driver received."""
        rows = [s for t in self.traces() if (s := t.stages_ms()) is not None]
        return {k: np.array([r[k] for r in rows]) for k in STAGES}

    def summary(self) -> dict[str, dict[str, float]]:
        """Median, p99, p99.9 and max (ms) of each stage."""
        out: dict[str, dict[str, float]] = {}
        for stage, values in self.stage_arrays().items():
            if values.size == 0:
                out[stage] = {"n": 0.0}
                continue
            out[stage] = {
                "n": float(values.size),
                "median": float(np.median(values)),
                "p99": float(np.percentile(values, 99)),
                "p99.9": float(np.percentile(values, 99.9)),
                "max": float(values.max()),
            }
        return out


# ---------------------------------------------------------------------- hot path


@dataclass
class LoopStats:
    """What the hot path has done since it started."""

    chunks: int = 0
    samples: int = 0
    spikes: int = 0
    commands: int = 0
    stale_chunks: int = 0
    suppressed: int = 0
    first_sample: int | None = None
    end_sample: int = 0
    #: seconds spent on each of the most recent chunks (a bounded window)
    processing_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=600_000)
    )


class HotPath:
    """Raw chunks in, stimulation commands out (one synchronous call per chunk).

    Keeps, for the session report, the first ``max_raster_spikes`` sorted spikes and a
    bounded recent history of decoder outputs, readout weights and chunk times.
    """

    def __init__(
        self,
        acquisition: OnlinePipeline,
        policies: list[Policy],
        decoder: DecoderPipeline | None = None,
        readout: SpikingReadout | None = None,
        max_raster_spikes: int = 2_000_000,
    ) -> None:
        self.acquisition = acquisition
        self.policies = policies
        self.decoder = decoder
        self.readout = readout
        self.stats = LoopStats()
        self._max_raster = max_raster_spikes
        self._raster: list[np.ndarray] = []
        self._raster_n = 0
        # recent history for the report, bounded so that a daemon's memory is too (the
        # session recording is where a full record belongs)
        self.decoded: collections.deque[DecoderOutput] = collections.deque(maxlen=10_000)
        #: (sample, readout weights), once a second, the last hour
        self.weights: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=3600)
        self._next_weights = 0

    def process(
        self, chunk: Chunk, stale: bool = False, at: float | None = None
    ) -> tuple[SpikeBatch, list[AnyStimCommand], list[AnyStimCommand]]:
        """Run every stage on ``chunk``: ``(spikes, commands to send, suppressed)``.

        The policies always see every batch, so their decisions depend on the data
        alone and a replay reproduces them; a ``stale`` chunk's commands are
        suppressed instead of sent (acting on old data would stimulate at the wrong
        moment). ``at`` is the LSL time the policies see (default: now; a replay
        passes the data's own time).
        """
        t0 = now()
        batch = self.acquisition.process(chunk)
        decoded = self.decoder.process(batch) if self.decoder is not None else None
        readout = self.readout.process(batch) if self.readout is not None else None
        when = now() if at is None else at
        made: list[AnyStimCommand] = []
        for policy in self.policies:
            made.extend(policy.process(batch, when, decoded, readout))
        self._keep(batch, decoded)
        s = self.stats
        if s.first_sample is None:
            s.first_sample = chunk.first_sample
        s.chunks += 1
        s.samples += chunk.n_samples
        s.spikes += len(batch)
        s.end_sample = chunk.end_sample
        if stale:
            s.stale_chunks += 1
            s.suppressed += len(made)
        else:
            s.commands += len(made)
        s.processing_s.append(now() - t0)
        return (batch, [], made) if stale else (batch, made, [])

    def rehearsals(self, at: float) -> list[AnyStimCommand]:
        """What the policies would send at LSL time ``at``, made the way they make
        commands and changing nothing (see ``LoopConfig.rehearse_ms``)."""
        return [cmd for p in self.policies if (cmd := p.rehearsal(at)) is not None]

    def _keep(self, batch: SpikeBatch, decoded: DecoderOutput | None) -> None:
        if len(batch) and self._raster_n < self._max_raster:
            self._raster.append(batch.spikes.copy())
            self._raster_n += len(batch)
        if decoded is not None and len(decoded):
            self.decoded.append(decoded)
        if self.readout is not None and batch.end_sample >= self._next_weights:
            self.weights.append((batch.end_sample, self.readout.weights.copy()))
            self._next_weights = batch.end_sample + int(batch.sample_rate)  # once a second

    @property
    def raster(self) -> np.ndarray:
        """Every kept spike (SPIKE_DTYPE), in order."""
        return np.concatenate(self._raster) if self._raster else empty_spikes()

    def status(self) -> dict[str, Any]:
        sorter = self.acquisition.sorter
        return {
            "chunks": self.stats.chunks,
            "spikes": self.stats.spikes,
            "units": 0 if sorter is None else int(sorter.n_units),
            "learning": bool(sorter is not None and sorter.learning),
            "commands": self.stats.commands,
        }
