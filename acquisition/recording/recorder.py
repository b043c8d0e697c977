"""The session recorder: a cheap ``write`` for the real-time loop, I/O in a thread.

:class:`SessionRecorder` is a stage: ``write(chunk)`` copies the samples into a
preallocated block of one flush (``flush_interval_ms`` of data) under a short lock and
returns; ``write_spikes``, ``write_event`` and ``write_rig_chunk`` append to a bounded
queue. A writer thread, woken once per full block or at the flush interval, appends
each block to the session folder (see :mod:`acquisition.recording.layout`) with one
CRC32 and one write (both release the GIL), ``fsync``-s it and records it in the
index, then writes the spikes and events. At most ``flush_interval_ms`` of data are
at risk in a crash. The blocks are bounded (``queue_s`` of data); when every block is
waiting for the disk, new samples are dropped and counted (``stats``), the drop is
logged and written to ``events.jsonl``, and the samples after it start a new segment.
When free disk space falls below ``warn_free_mb`` the recorder warns once; below
``stop_free_mb`` it stops cleanly (the session stays whole and says why it stopped);
later writes are counted as dropped.

With a simulated rig: ``RigStreamer(rig, on_chunk=recorder.write_rig_chunk)``.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from acquisition.recording import layout
from acquisition.recording.blockfile import BlockWriter, fsync_dir
from acquisition.recording.config import RecordingConfig
from bci.clock import now
from bci.errors import BciError
from bci.types import SPIKE_DTYPE, Chunk, SpikeBatch

log = logging.getLogger(__name__)

#: Free bytes on the file system holding a path.
DiskUsage = Callable[[Path], int]

_MB = 1024 * 1024
_MAX_SMALL_ITEMS = 100_000


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the file system holding ``path``."""
    return int(shutil.disk_usage(path).free)


class RecordingError(BciError):
    """A session could not be created, written or read."""


@dataclass
class RecorderStats:
    """What the recorder received, wrote and dropped (samples are raw rows)."""

    chunks_in: int = 0
    samples_in: int = 0
    samples_written: int = 0
    spikes_written: int = 0
    events_written: int = 0
    flushes: int = 0
    segments: int = 0
    bytes_written: int = 0
    dropped_chunks: int = 0
    dropped_samples: int = 0
    dropped_spikes: int = 0
    dropped_events: int = 0
    queue_high_water_bytes: int = 0
    max_flush_s: float = 0.0

    @property
    def dropped(self) -> int:
        return self.dropped_chunks + self.dropped_spikes + self.dropped_events


@dataclass
class _RawBlock:
    """A preallocated block of raw rows: ``buf[:n]`` holds samples ``first..first+n``."""

    buf: np.ndarray
    n: int = 0
    first: int = 0
    timestamp: float = 0.0


@dataclass
class _Segment:
    k: int
    first_sample: int
    n_samples: int
    writer: BlockWriter


class SessionRecorder:
    """Writes one session folder (raw samples, spikes, events, metadata).

    Consumes :class:`~bci.types.Chunk` (float32 µV ``(n_samples, n_channels)``),
    :class:`~bci.types.SpikeBatch`, and event dicts; produces nothing in the loop.
    ``folder`` is the session folder itself (created; must not hold a session yet).
    ``positions_um`` ``(n_channels, 2)`` or a probeinterface ``probe`` give the
    geometry. ``resolved_config`` (a pydantic model or dict) is stored with the code
    version. ``disk_usage`` returns free bytes for a path (injectable for tests).
    """

    def __init__(
        self,
        folder: Path,
        sample_rate: float,
        n_channels: int,
        *,
        config: RecordingConfig | None = None,
        positions_um: np.ndarray | None = None,
        probe: Any | None = None,
        channel_ids: Sequence[str] | None = None,
        resolved_config: BaseModel | dict[str, Any] | None = None,
        rig: str = "rig0",
        metadata: dict[str, Any] | None = None,
        disk_usage: DiskUsage = free_bytes,
        fsync: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.sample_rate = float(sample_rate)
        self.n_channels = int(n_channels)
        self.config = config or RecordingConfig()
        self.channel_ids = list(channel_ids or [f"e{i}" for i in range(self.n_channels)])
        if len(self.channel_ids) != self.n_channels:
            raise RecordingError(
                "channel_ids and n_channels disagree",
                n_channels=self.n_channels,
                channel_ids=len(self.channel_ids),
            )
        self.positions_um = (
            np.zeros((self.n_channels, 2))
            if positions_um is None
            else np.asarray(positions_um, dtype=np.float64)[:, :2]
        )
        self._probe = probe
        self._has_positions = positions_um is not None
        self.rig = rig
        if isinstance(resolved_config, BaseModel):
            resolved_config = resolved_config.model_dump(mode="json")
        self._resolved = resolved_config
        self._extra = dict(metadata or {})
        self._disk_usage = disk_usage
        self._fsync = fsync
        self.stats = RecorderStats()
        self.frame_bytes = 4 * self.n_channels
        self._flush_samples = max(1, round(self.config.flush_interval_ms * self.sample_rate / 1e3))
        self._rotate_bytes = (
            None if self.config.rotate_mb is None else int(self.config.rotate_mb * _MB)
        )
        self._rotate_samples = (
            None if self.config.rotate_s is None else round(self.config.rotate_s * self.sample_rate)
        )
        # raw samples go into preallocated blocks of one flush each (allocated on first
        # use, reused after), so the writer writes one contiguous buffer per flush
        self._max_blocks = max(
            2, -(-round(self.config.queue_s * self.sample_rate) // self._flush_samples)
        )
        self._free: list[_RawBlock] = []
        self._n_blocks = 0
        self._filling: _RawBlock | None = None
        self._sealed: collections.deque[_RawBlock] = collections.deque()
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.state = "new"
        self.stop_reason: str | None = None
        self._warned_disk = False
        self._warned_drop = False
        self._meta: dict[str, Any] = {}
        # writer-thread state
        self._segments: list[_Segment] = []
        self._next_expected: int | None = None
        self._spikes: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []
        self._events: list[bytes] = []
        self._spike_writer: BlockWriter | None = None
        self._gt_writer: BlockWriter | None = None
        self._events_file: Any = None
        self._last_flush = time.monotonic()
        self._reported_drops = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_rig(
        cls, rig: Any, folder: Path, config: RecordingConfig | None = None, **kwargs: Any
    ) -> SessionRecorder:
        """A recorder for a :class:`~acquisition.sim.rig.SimulatedRig` (its probe, rate,
        labels and config, seed included)."""
        kwargs.setdefault("resolved_config", {"sim_rig": rig.config.model_dump(mode="json")})
        return cls(
            folder,
            rig.sample_rate_hz,
            rig.n_channels,
            config=config,
            probe=rig.probe,
            positions_um=rig.electrode_xy,
            channel_ids=rig.channel_labels,
            **kwargs,
        )

    @classmethod
    def for_config(
        cls, config: Any, sample_rate: float, n_channels: int, **kwargs: Any
    ) -> SessionRecorder:
        """A recorder for a whole :class:`~bci.config.BciConfig`: a new session folder
        under ``config.recording.folder`` (defaults if the section is absent), the rig
        name, and the resolved config stored in the session."""
        rec_cfg = config.recording or RecordingConfig()
        kwargs.setdefault("resolved_config", config)
        kwargs.setdefault("rig", config.rig)
        folder = cls.new_folder(rec_cfg.folder, config.rig)
        return cls(folder, sample_rate, n_channels, config=rec_cfg, **kwargs)

    @staticmethod
    def new_folder(parent: Path, rig: str = "rig0") -> Path:
        """A fresh session folder name under ``parent``: ``{rig}-{UTC date-time}``."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = Path(parent) / f"{rig}-{stamp}"
        k = 1
        while path.exists():
            path = Path(parent) / f"{rig}-{stamp}-{k}"
            k += 1
        return path

    @property
    def checkpoint_dir(self) -> Path:
        """Folder for decoder checkpoints (``decoders.checkpoint`` writes there)."""
        return self.folder / layout.CHECKPOINTS

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SessionRecorder:
        """Create the session folder and its metadata and start the writer thread."""
        if self.state != "new":
            raise RecordingError("a recorder starts once", state=self.state)
        if (self.folder / layout.SESSION_JSON).exists():
            raise RecordingError(f"{self.folder} already holds a session", folder=str(self.folder))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.checkpoint_dir.mkdir(exist_ok=True)
            fsync_dir(self.folder.parent)
            free = self._disk_usage(self.folder)
            if free < self.config.stop_free_mb * _MB:
                raise RecordingError(
                    f"not enough free disk space to record in {self.folder}: "
                    f"{free / _MB:.0f} MB free, stop threshold {self.config.stop_free_mb:g} MB",
                    folder=str(self.folder),
                )
            self._meta = {
                "format": layout.FORMAT,
                "format_version": layout.FORMAT_VERSION,
                "created_utc": datetime.now(UTC).isoformat(),
                "created_lsl_s": now(),
                "rig": self.rig,
                "sample_rate_hz": self.sample_rate,
                "n_channels": self.n_channels,
                "channel_ids": self.channel_ids,
                "unit": "uV",
                "dtype": "<f4",
                "code_version": layout.code_version(),
                "recording": self.config.model_dump(mode="json"),
                "config": self._resolved,
                "state": "recording",
                "stop_reason": None,
                **self._extra,
            }
            layout.write_session_json(self.folder, self._meta)
            if self._resolved is not None:
                import yaml

                layout.atomic_write_text(
                    self.folder / layout.CONFIG_YAML,
                    yaml.safe_dump(self._resolved, sort_keys=False, allow_unicode=True),
                )
            if self._has_positions or self._probe is not None:
                try:
                    layout.write_probegroup(self.folder, self.positions_um, self._probe)
                except ValueError as exc:  # e.g. duplicate contact positions
                    log.warning("session %s: no probe geometry written: %s", self.folder, exc)
            layout.write_binary_json(
                self.folder, self.sample_rate, self.n_channels, self.channel_ids, []
            )
            if self.config.record_spikes:
                self._spike_writer = BlockWriter(
                    self.folder / layout.SPIKES_RAW,
                    self.folder / layout.SPIKES_INDEX,
                    fsync=self._fsync,
                )
            if self.config.record_events:
                self._events_file = open(  # noqa: SIM115 - kept open by the writer thread
                    self.folder / layout.EVENTS, "ab", buffering=0
                )
        except OSError as exc:
            raise RecordingError(
                f"cannot create session {self.folder}: {exc}", folder=str(self.folder)
            ) from exc
        self.state = "recording"
        self._thread = threading.Thread(
            target=self._run, name=f"recorder-{self.folder.name}", daemon=True
        )
        self._thread.start()
        log.info("recording session %s", self.folder)
        return self

    def close(self, timeout: float | None = 30.0) -> RecorderStats:
        """Write everything queued, close the files, mark the session closed."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RecordingError("the writer thread did not finish", folder=str(self.folder))
        if self.stats.dropped:
            log.warning(
                "session %s: dropped %d chunks (%d samples), %d spikes, %d events",
                self.folder,
                self.stats.dropped_chunks,
                self.stats.dropped_samples,
                self.stats.dropped_spikes,
                self.stats.dropped_events,
            )
        if self._error is not None:
            raise RecordingError(
                f"recorder failed: {self._error}", folder=str(self.folder)
            ) from self._error
        return self.stats

    def __enter__(self) -> SessionRecorder:
        if self.state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stopped(self) -> bool:
        """True once the recorder stopped writing (closed, disk full or failed)."""
        return self.state != "recording"

    # ------------------------------------------------------------------ the cheap side

    def _put(self, kind: str, item: Any) -> bool:
        """Queue a small item; if the recorder stopped or the queue is full, count it as
        dropped (under the lock, like every drop count) and return False."""
        with self._cond:
            if (
                self.state == "recording"
                and not self._stop
                and len(self._queue) < (_MAX_SMALL_ITEMS)
            ):
                self._queue.append((kind, item))
                return True
            self._count_lost([(kind, item)])
        return False

    def _seal(self) -> None:
        """Hand the block being filled to the writer (call with the lock held)."""
        block = self._filling
        self._filling = None
        if block is not None and block.n:
            self._sealed.append(block)
            queued = sum(b.n for b in self._sealed) * self.frame_bytes
            if queued > self.stats.queue_high_water_bytes:
                self.stats.queue_high_water_bytes = queued
            self._cond.notify()
        elif block is not None:
            self._free.append(block)

    def write(self, chunk: Chunk) -> None:
        """Copy a raw chunk into the recorder's buffer. Never blocks on I/O; when every
        buffer block is waiting for the disk, the chunk (or its rest) is dropped and
        counted, and the samples after it start a new segment."""
        data = chunk.data
        if data.ndim != 2 or data.shape[1] != self.n_channels:
            raise RecordingError(
                "chunk has the wrong shape for this session",
                expected_channels=self.n_channels,
                shape=tuple(data.shape),
            )
        rows = int(data.shape[0])
        first = int(chunk.first_sample)
        cap = self._flush_samples
        self.stats.chunks_in += 1
        self.stats.samples_in += rows
        dropped = 0
        with self._cond:
            if self.state != "recording" or self._stop:
                dropped = rows
            else:
                block = self._filling
                if block is not None and block.n and first != block.first + block.n:
                    self._seal()  # not contiguous: the writer starts a new segment
                off = 0
                while off < rows:
                    block = self._filling
                    if block is None:
                        if self._free:
                            block = self._free.pop()
                        elif self._n_blocks < self._max_blocks:
                            block = _RawBlock(np.empty((cap, self.n_channels), np.float32))
                            self._n_blocks += 1
                        else:
                            dropped = rows - off
                            break
                        block.n = 0
                        block.first = first + off
                        block.timestamp = float(chunk.timestamp) + off / chunk.sample_rate
                        self._filling = block
                    take = min(rows - off, cap - block.n)
                    block.buf[block.n : block.n + take] = data[off : off + take]
                    block.n += take
                    off += take
                    if block.n == cap:
                        self._seal()
            if dropped:  # counted under the lock: the writer thread counts drops too
                self.stats.dropped_chunks += 1
                self.stats.dropped_samples += dropped
        if dropped:
            self._note_drop()

    def write_spikes(self, batch: SpikeBatch | np.ndarray) -> None:
        """Queue detected or sorted spikes (:data:`~bci.types.SPIKE_DTYPE`)."""
        spikes = batch.spikes if isinstance(batch, SpikeBatch) else np.asarray(batch)
        if len(spikes) == 0 or not self.config.record_spikes:
            return
        if spikes.dtype != SPIKE_DTYPE:
            raise RecordingError("spikes must have SPIKE_DTYPE", dtype=str(spikes.dtype))
        if not self._put("spikes", spikes.copy()):
            self._note_drop()

    def write_event(self, kind: str, payload: dict[str, Any] | None = None, **fields: Any) -> None:
        """Queue an event (stim command, ack, state change...): one JSON line with
        ``kind``, ``time`` (LSL s; now unless given) and the payload's fields."""
        if not self.config.record_events:
            return
        row: dict[str, Any] = {"kind": kind}
        row.update(payload or {})
        row.update(fields)
        row.setdefault("time", now())
        if not self._put("event", row):
            self._note_drop()

    def write_rig_chunk(self, out: Any) -> None:
        """Record a simulated rig's :class:`~acquisition.sim.rig.RigChunk`: the samples,
        its ground truth spikes and the starts of stimuli (as ``stim_start`` events)."""
        self.write(out.chunk)
        gt = out.ground_truth
        if len(gt) and self.config.record_spikes:
            self._put("gt", gt.copy())
        for start in out.stim_starts:
            self.write_event("stim_start", sample=int(start), time=float(out.chunk.time_of(start)))

    def _note_drop(self) -> None:
        if not self._warned_drop and self.state == "recording":
            self._warned_drop = True
            log.warning("recorder queue full for %s: dropping (counted in stats)", self.folder)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        interval = self.config.flush_interval_ms / 1e3
        try:
            while True:
                with self._cond:
                    # sleep until a block is full or the flush interval is up
                    deadline = self._last_flush + interval
                    while not self._stop and not self._sealed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    stopping = self._stop
                    due = stopping or time.monotonic() >= deadline
                    if due:
                        self._seal()  # the partly filled block too: data at risk <= interval
                    blocks = list(self._sealed)
                    self._sealed.clear()
                    items = list(self._queue)
                    self._queue.clear()
                for k, block in enumerate(blocks):
                    if self.state != "recording":
                        with self._cond:
                            self._count_lost_blocks(blocks[k:])
                        break
                    self._write_block(block)
                    with self._cond:
                        self._free.append(block)
                for i, (kind, item) in enumerate(items):
                    if self.state != "recording":
                        with self._cond:
                            self._count_lost(items[i:])
                        break
                    self._take(kind, item)
                if self.state == "recording" and (blocks or due):
                    self._flush_small()
                    self.stats.flushes += 1
                    self._last_flush = time.monotonic()
                if stopping or self.state != "recording":
                    break
        except BaseException as exc:
            log.exception("recorder for %s failed", self.folder)
            self._error = exc
            self.stop_reason = f"writer failed: {exc}"
            with self._cond:
                self.state = "failed"
        finally:
            self._finish()

    def _take(self, kind: str, item: Any) -> None:
        if kind == "spikes":
            self._spikes.append(item)
        elif kind == "gt":
            self._gt.append(item)
        else:
            self._event_line(item)

    def _report_drops(self) -> None:
        drops = self.stats.dropped
        if drops != self._reported_drops:
            self._reported_drops = drops
            self._event_line(
                {
                    "kind": "recorder_drop",
                    "time": now(),
                    "dropped_chunks": self.stats.dropped_chunks,
                    "dropped_samples": self.stats.dropped_samples,
                    "dropped_spikes": self.stats.dropped_spikes,
                    "dropped_events": self.stats.dropped_events,
                }
            )

    def _count_lost_blocks(self, blocks: list[_RawBlock]) -> None:
        for block in blocks:
            if block.n:
                self.stats.dropped_chunks += 1
                self.stats.dropped_samples += block.n

    def _count_lost(self, items: list[tuple[str, Any]]) -> None:
        """Count queued items that will never be written (the recorder stopped)."""
        for kind, item in items:
            if kind in ("spikes", "gt"):
                self.stats.dropped_spikes += len(item)
            else:
                self.stats.dropped_events += 1

    def _event_line(self, row: dict[str, Any]) -> None:
        import json

        self._events.append((json.dumps(row, default=_jsonable) + "\n").encode())

    def _small_bytes(self) -> int:
        return (
            sum(s.nbytes for s in self._spikes)
            + sum(g.nbytes for g in self._gt)
            + sum(len(e) for e in self._events)
        )

    def _check_disk(self, need: int) -> bool:
        """True if ``need`` bytes may be written; else stop cleanly."""
        free = self._disk_usage(self.folder)
        if free - need < self.config.stop_free_mb * _MB:
            reason = (
                f"disk nearly full: {free / _MB:.1f} MB free, stop threshold "
                f"{self.config.stop_free_mb:g} MB; recording stopped cleanly"
            )
            log.error("session %s: %s", self.folder, reason)
            self.stop_reason = reason
            self._event_line({"kind": "recorder_stopped", "time": now(), "reason": reason})
            with self._cond:
                self.state = "stopped"
                self._seal()
                self._count_lost_blocks(list(self._sealed))
                self._free.extend(self._sealed)
                self._sealed.clear()
                self._count_lost(list(self._queue))
                self._queue.clear()
            return False
        if not self._warned_disk and free - need < self.config.warn_free_mb * _MB:
            self._warned_disk = True
            msg = (
                f"disk space low: {free / _MB:.1f} MB free (warning at "
                f"{self.config.warn_free_mb:g} MB, stop at {self.config.stop_free_mb:g} MB)"
            )
            log.warning("session %s: %s", self.folder, msg)
            self._event_line({"kind": "disk_low", "time": now(), "free_mb": free / _MB})
            self._meta["disk_warning"] = msg
        return True

    def _write_block(self, block: _RawBlock) -> None:
        """Write one raw block (one contiguous buffer: one CRC32 and one write, both
        without the GIL), starting a new segment on a gap or at a rotation."""
        t0 = time.perf_counter()
        if not self._check_disk(block.n * self.frame_bytes + self._small_bytes()):
            with self._cond:
                self._count_lost_blocks([block])
            return
        if self._next_expected is not None and block.first != self._next_expected:
            gap = block.first - self._next_expected
            self._event_line(
                {
                    "kind": "gap",
                    "time": block.timestamp,
                    "sample": block.first,
                    "missing_samples": gap,
                }
            )
            self._new_segment(block.first)
        self._next_expected = block.first + block.n
        done = 0
        while done < block.n:
            seg = self._segments[-1] if self._segments else None
            if seg is None:
                seg = self._new_segment(block.first + done)
            room = self._room(seg)
            if room <= 0:
                seg = self._new_segment(block.first + done)
                room = self._room(seg)
            take = min(room, block.n - done)
            seg.writer.append(
                block.buf[done : done + take],
                first_sample=block.first + done,
                n_samples=take,
                timestamp=block.timestamp + done / self.sample_rate,
            )
            seg.n_samples += take
            done += take
        self.stats.samples_written += block.n
        self.stats.bytes_written += block.n * self.frame_bytes
        self.stats.max_flush_s = max(self.stats.max_flush_s, time.perf_counter() - t0)

    def _flush_small(self) -> None:
        """Write and ``fsync`` the pending spikes, ground truth and events."""
        self._report_drops()
        need = self._small_bytes()
        if not need or not self._check_disk(need):
            return
        if self._spikes and self._spike_writer is not None:
            arr = np.concatenate(self._spikes)
            self._spikes.clear()
            self._spike_writer.append(arr, n=len(arr))
            self.stats.spikes_written += len(arr)
            self.stats.bytes_written += arr.nbytes
        if self._gt:
            arr = np.concatenate(self._gt)
            self._gt.clear()
            if self._gt_writer is None:
                self._gt_writer = BlockWriter(
                    self.folder / layout.GT_RAW, self.folder / layout.GT_INDEX, fsync=self._fsync
                )
            self._gt_writer.append(arr, n=len(arr))
            self.stats.bytes_written += arr.nbytes
        if self._events and self._events_file is not None:
            blob = b"".join(self._events)
            self.stats.events_written += len(self._events)
            self._events_file.write(blob)
            if self._fsync:
                os.fsync(self._events_file.fileno())
            self.stats.bytes_written += len(blob)
        self._events.clear()

    def _room(self, seg: _Segment) -> int:
        """Samples the current segment can still take before it rotates."""
        room = 1 << 62
        if self._rotate_bytes is not None:
            room = min(room, self._rotate_bytes // self.frame_bytes - seg.n_samples)
        if self._rotate_samples is not None:
            room = min(room, self._rotate_samples - seg.n_samples)
        # never leave a segment empty because of a tiny rotation size
        return room if seg.n_samples or room > 0 else 1

    def _new_segment(self, first_sample: int) -> _Segment:
        if self._segments and self._segments[-1].n_samples == 0:
            seg = self._segments[-1]
            seg.first_sample = first_sample  # reuse an empty segment
        else:
            if self._segments:
                self._segments[-1].writer.close()
            k = len(self._segments)
            writer = BlockWriter(
                self.folder / layout.segment_name(k),
                self.folder / layout.segment_index_name(k),
                fsync=self._fsync,
            )
            seg = _Segment(k, first_sample, 0, writer)
            self._segments.append(seg)
            self.stats.segments += 1
        layout.write_binary_json(
            self.folder,
            self.sample_rate,
            self.n_channels,
            self.channel_ids,
            [(s.k, s.first_sample) for s in self._segments],
        )
        return seg

    def _finish(self) -> None:
        for w in [s.writer for s in self._segments] + [self._spike_writer, self._gt_writer]:
            if w is not None:
                try:
                    w.close()
                except OSError:
                    log.exception("closing %s", w.data_path)
        if self._events_file is not None and not self._events_file.closed:
            # after a disk-full stop the last events (the warning, the stop) are still
            # written: a few hundred bytes, well inside the stop margin
            if self.state == "stopped" and self._events:
                blob = b"".join(self._events)[: 1 << 20]
                try:
                    self._events_file.write(blob)
                    if self._fsync:
                        os.fsync(self._events_file.fileno())
                except OSError:
                    log.exception("writing the last events of %s", self.folder)
            self._events_file.close()
        with self._cond:
            if self.state == "recording":
                self.state = "closed"
        if self._meta:
            self._meta.update(
                state=self.state,
                stop_reason=self.stop_reason,
                closed_utc=datetime.now(UTC).isoformat(),
                stats=asdict(self.stats),
                segments=[
                    {
                        "file": layout.segment_name(s.k),
                        "first_sample": s.first_sample,
                        "n_samples": s.n_samples,
                    }
                    for s in self._segments
                ],
            )
            try:
                layout.write_session_json(self.folder, self._meta)
            except OSError:
                log.exception("cannot write the final metadata of %s", self.folder)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)
