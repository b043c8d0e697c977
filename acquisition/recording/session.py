"""Reading a session folder back, verifying it, and repairing it after a crash.

:class:`Session` opens a folder written by
:class:`~acquisition.recording.recorder.SessionRecorder`. Only verified blocks are
data: a torn index line, a checksum mismatch or bytes after the last indexed block
(a crash between a write and its index line) are listed in :attr:`Session.problems`
and never returned. :meth:`Session.repair` cuts every file back to its verified part
and rewrites ``binary.json`` so SpikeInterface sees exactly the verified samples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording import layout
from acquisition.recording.blockfile import (
    Block,
    ScanResult,
    Verify,
    read_jsonl,
    scan_blocks,
    truncate_to,
)
from acquisition.recording.recorder import RecordingError
from bci.types import GT_SPIKE_DTYPE, SPIKE_DTYPE, Chunk

log = logging.getLogger(__name__)


@dataclass
class SegmentInfo:
    """One raw segment file: its verified blocks and the samples they hold."""

    k: int
    path: Path
    scan: ScanResult
    n_channels: int

    @property
    def blocks(self) -> list[Block]:
        return self.scan.blocks

    @property
    def n_samples(self) -> int:
        return self.scan.verified_bytes // (4 * self.n_channels)

    @property
    def first_sample(self) -> int:
        return int(self.blocks[0].meta["first_sample"]) if self.blocks else 0

    @property
    def end_sample(self) -> int:
        return self.first_sample + self.n_samples

    @property
    def timestamp(self) -> float:
        """LSL time (s) of the segment's first sample."""
        return float(self.blocks[0].meta.get("timestamp", 0.0)) if self.blocks else 0.0


class Session:
    """A recorded session folder, read-only unless :meth:`repair` is called.

    ``verify``: ``"all"`` checks the CRC32 of every block, ``"tail"`` (default) the last
    block of each file, ``"none"`` none. Samples are float32 µV.
    """

    def __init__(self, folder: Path, verify: Verify = "tail") -> None:
        self.folder = Path(folder)
        if not (self.folder / layout.SESSION_JSON).exists():
            raise RecordingError(
                f"{self.folder} is not a session (no {layout.SESSION_JSON})",
                folder=str(self.folder),
            )
        try:
            self.meta: dict[str, Any] = layout.read_session_json(self.folder)
        except (OSError, ValueError) as exc:
            raise RecordingError(
                f"cannot read {self.folder / layout.SESSION_JSON}: {exc}", folder=str(self.folder)
            ) from exc
        self.sample_rate = float(self.meta["sample_rate_hz"])
        self.n_channels = int(self.meta["n_channels"])
        self.channel_ids: list[str] = list(self.meta["channel_ids"])
        self.verify: Verify = verify
        self.problems: list[str] = []
        self.segments: list[SegmentInfo] = []
        k = 0
        while (self.folder / layout.segment_name(k)).exists():
            scan = scan_blocks(
                self.folder / layout.segment_name(k),
                self.folder / layout.segment_index_name(k),
                verify,
            )
            frame = 4 * self.n_channels
            if scan.verified_bytes % frame:
                raise RecordingError(
                    f"{scan.data_path.name}: verified size is not a whole number of samples",
                    folder=str(self.folder),
                )
            self.problems.extend(scan.problems)
            self.segments.append(SegmentInfo(k, scan.data_path, scan, self.n_channels))
            k += 1
        self._spike_scan = scan_blocks(
            self.folder / layout.SPIKES_RAW, self.folder / layout.SPIKES_INDEX, verify
        )
        self.problems.extend(self._spike_scan.problems)
        self._gt_scan = scan_blocks(
            self.folder / layout.GT_RAW, self.folder / layout.GT_INDEX, verify
        )
        self.problems.extend(self._gt_scan.problems)
        self._events, self._events_bytes, ev_problems = read_jsonl(self.folder / layout.EVENTS)
        self.problems.extend(ev_problems)
        if self.state == "recording":
            self.problems.insert(
                0, "the session was not closed (the recorder was killed or is still running)"
            )
        if self.problems:
            log.warning("session %s: %s", self.folder, "; ".join(self.problems))

    # ------------------------------------------------------------------ metadata

    @property
    def state(self) -> str:
        """``recording`` (never closed), ``closed``, ``stopped`` (e.g. disk full),
        ``failed`` or ``recovered`` (repaired after a crash)."""
        return str(self.meta.get("state"))

    @property
    def torn(self) -> bool:
        """True if anything after the last flush was found (and ignored)."""
        return bool(self.problems)

    @property
    def code_version(self) -> str:
        return str(self.meta.get("code_version"))

    @property
    def config(self) -> dict[str, Any] | None:
        cfg = self.meta.get("config")
        return cfg if isinstance(cfg, dict) else None

    @property
    def positions_um(self) -> np.ndarray:
        return layout.read_positions(self.folder, self.n_channels)

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / layout.CHECKPOINTS

    @property
    def n_samples(self) -> int:
        """Verified samples over all segments."""
        return sum(s.n_samples for s in self.segments)

    @property
    def first_sample(self) -> int:
        live = [s for s in self.segments if s.n_samples]
        return live[0].first_sample if live else 0

    def lsl_time_of_sample0(self) -> float:
        """LSL time (s) of absolute sample 0 (from the first block's timestamp)."""
        live = [s for s in self.segments if s.n_samples]
        if not live:
            return 0.0
        return live[0].timestamp - live[0].first_sample / self.sample_rate

    # ------------------------------------------------------------------ data

    def read(self, segment: int = 0, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Verified samples ``[start, stop)`` of a segment (indices within the segment),
        ``(n, n_channels)`` float32 µV (a read-only memory map)."""
        seg = self.segments[segment]
        stop = seg.n_samples if stop is None else min(stop, seg.n_samples)
        if seg.n_samples == 0 or stop <= start:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        mm = np.memmap(seg.path, dtype="<f4", mode="r", shape=(seg.n_samples, self.n_channels))
        return mm[start:stop]

    def read_all(self) -> np.ndarray:
        """All verified samples of all segments, concatenated (copies into memory)."""
        parts = [np.asarray(self.read(s.k)) for s in self.segments if s.n_samples]
        if not parts:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        return np.concatenate(parts)

    def chunks(self, chunk_samples: int, read_ahead_s: float = 1.0) -> Iterator[Chunk]:
        """Verified samples as :class:`~bci.types.Chunk` objects (absolute first sample,
        LSL timestamps from the block index), never crossing a segment boundary.

        The file is read ``read_ahead_s`` at a time into a fresh array; each chunk's
        data is a view into it (stages may keep or modify it)."""
        step = max(1, int(chunk_samples))
        ahead = max(step, (round(read_ahead_s * self.sample_rate) // step) * step)
        for seg in self.segments:
            if not seg.n_samples:
                continue
            mm = self.read(seg.k)
            starts = np.array([int(b.meta["first_sample"]) for b in seg.blocks])
            stamps = np.array([float(b.meta.get("timestamp", 0.0)) for b in seg.blocks])
            for lo in range(0, seg.n_samples, ahead):
                hi = min(seg.n_samples, lo + ahead)
                buf = np.array(mm[lo:hi])
                firsts = seg.first_sample + np.arange(lo, hi, step)
                j = np.searchsorted(starts, firsts, side="right") - 1
                times = stamps[j] + (firsts - starts[j]) / self.sample_rate
                for i, first in enumerate(firsts.tolist()):
                    a = first - seg.first_sample - lo
                    yield Chunk(buf[a : a + step], first, float(times[i]), self.sample_rate)

    def spikes(self) -> np.ndarray:
        """Verified spikes (:data:`~bci.types.SPIKE_DTYPE`)."""
        return _read_records(self._spike_scan, SPIKE_DTYPE)

    def ground_truth(self) -> np.ndarray:
        """Verified ground-truth spikes of a simulated rig (:data:`GT_SPIKE_DTYPE`)."""
        return _read_records(self._gt_scan, GT_SPIKE_DTYPE)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events (JSON objects with ``kind`` and ``time``), optionally of one kind."""
        return [e for e in self._events if kind is None or e.get("kind") == kind]

    # ------------------------------------------------------------------ SpikeInterface

    def to_spikeinterface(self) -> Any:
        """The raw data as a SpikeInterface recording (``spikeinterface.load`` of the
        folder). Call :meth:`repair` first on a session that was not closed."""
        import spikeinterface.core as sc

        return sc.load(self.folder)

    def sorting(self, sorted_only: bool = True) -> Any:
        """The recorded spikes as a SpikeInterface ``NumpySorting`` (one segment; spike
        frames are absolute sample indices). ``sorted_only`` drops unit -1."""
        import spikeinterface.core as sc

        spikes = self.spikes()
        if sorted_only:
            spikes = spikes[spikes["unit"] >= 0]
        spikes = spikes[np.argsort(spikes["sample"], kind="stable")]
        unit_ids = np.unique(spikes["unit"]).astype(np.int64)
        return sc.NumpySorting.from_samples_and_labels(
            [spikes["sample"].astype(np.int64)],
            [spikes["unit"].astype(np.int64)],
            self.sample_rate,
            unit_ids=unit_ids,
        )

    # ------------------------------------------------------------------ repair

    def repair(self) -> list[str]:
        """Cut every file back to its verified part, drop empty segments from
        ``binary.json``, and mark a never-closed session ``recovered``. Returns what
        was done (empty if nothing needed doing)."""
        done: list[str] = []
        for seg in self.segments:
            if truncate_to(seg.scan, self.folder / layout.segment_index_name(seg.k)):
                done.append(
                    f"{seg.path.name}: cut to {seg.n_samples} verified samples "
                    f"({seg.scan.tail_bytes} tail bytes removed)"
                )
        for scan, index in (
            (self._spike_scan, layout.SPIKES_INDEX),
            (self._gt_scan, layout.GT_INDEX),
        ):
            if truncate_to(scan, self.folder / index):
                done.append(f"{scan.data_path.name}: cut to its verified blocks")
        events = self.folder / layout.EVENTS
        if events.exists() and events.stat().st_size > self._events_bytes:
            import os

            os.truncate(events, self._events_bytes)
            done.append(f"{layout.EVENTS}: torn last line removed")
        live = [(s.k, s.first_sample) for s in self.segments if s.n_samples]
        layout.write_binary_json(
            self.folder, self.sample_rate, self.n_channels, self.channel_ids, live
        )
        if self.state == "recording":
            self.meta["state"] = "recovered"
            self.meta["recovered"] = {
                "n_samples": self.n_samples,
                "problems": list(self.problems),
            }
            self.meta["segments"] = [
                {
                    "file": layout.segment_name(s.k),
                    "first_sample": s.first_sample,
                    "n_samples": s.n_samples,
                }
                for s in self.segments
            ]
            layout.write_session_json(self.folder, self.meta)
            done.append("session marked recovered")
        for line in done:
            log.info("repaired %s: %s", self.folder, line)
        return done

    def summary(self) -> dict[str, Any]:
        """A JSON-able description for people and reports."""
        return {
            "folder": str(self.folder),
            "state": self.state,
            "stop_reason": self.meta.get("stop_reason"),
            "code_version": self.code_version,
            "sample_rate_hz": self.sample_rate,
            "n_channels": self.n_channels,
            "n_samples": self.n_samples,
            "duration_s": self.n_samples / self.sample_rate,
            "segments": [
                {"file": s.path.name, "first_sample": s.first_sample, "n_samples": s.n_samples}
                for s in self.segments
            ],
            "spikes": len(self.spikes()),
            "events": len(self._events),
            "problems": list(self.problems),
        }


def _read_records(scan: ScanResult, dtype: np.dtype) -> np.ndarray:
    if not scan.verified_bytes:
        return np.zeros(0, dtype=dtype)
    with open(scan.data_path, "rb") as f:
        raw = f.read(scan.verified_bytes)
    return np.frombuffer(raw, dtype=dtype).copy()


def open_session(folder: Path, *, repair: bool = False, verify: Verify = "tail") -> Session:
    """Open a session; with ``repair=True`` fix a crashed one first (see :meth:`Session.repair`)."""
    session = Session(folder, verify)
    if repair and (session.problems or session.state == "recording"):
        session.repair()
        session = Session(folder, verify)
    return session


def is_session(path: Path) -> bool:
    try:
        return json.loads((Path(path) / layout.SESSION_JSON).read_text()).get("format") == (
            layout.FORMAT
        )
    except (OSError, ValueError, AttributeError):
        return False
