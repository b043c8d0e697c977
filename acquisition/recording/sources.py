"""Recordings as sources of :class:`~bci.types.Chunk` objects, for replay.

Every source exposes ``sample_rate`` (Hz), ``n_channels``, ``channel_ids``,
``positions_um`` ``(n_channels, 2)``, ``n_samples`` and ``chunks(chunk_samples)``,
which yields float32 µV chunks with their absolute ``first_sample`` and the LSL (or
file) time of their first row. Chunks never cross a segment or a gap.

Readers: our sessions (:class:`SessionSource`), anything ``spikeinterface.load``
opens, e.g. binary folders (:class:`SpikeInterfaceSource`), NWB files with an
``ElectricalSeries`` (:class:`NwbSource`) and XDF files as LabRecorder writes them
(:class:`XdfSource`). :func:`open_source` picks the reader from the path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording.recorder import RecordingError
from acquisition.recording.session import Session, is_session
from bci.types import Chunk

log = logging.getLogger(__name__)


@dataclass
class SourceSegment:
    """Contiguous samples: ``read(start, stop)`` returns rows ``[start, stop)`` of the
    segment as float32 µV; ``times`` (optional, ``(n,)`` s) are per-sample timestamps,
    otherwise row ``i`` has time ``t0 + i / rate``."""

    first_sample: int
    n_samples: int
    read: Callable[[int, int], np.ndarray]
    t0: float = 0.0
    times: np.ndarray | None = None


class RecordingSource:
    """Base of the readers: segments of contiguous samples plus channel metadata."""

    kind = "recording"

    def __init__(
        self,
        name: str,
        sample_rate: float,
        channel_ids: list[str],
        positions_um: np.ndarray | None,
        segments: list[SourceSegment],
    ) -> None:
        self.name = name
        self.sample_rate = float(sample_rate)
        self.channel_ids = channel_ids
        self.n_channels = len(channel_ids)
        self.positions_um = (
            np.zeros((self.n_channels, 2))
            if positions_um is None
            else np.asarray(positions_um, dtype=np.float64)[:, :2]
        )
        self.segments = segments

    @property
    def n_samples(self) -> int:
        return sum(s.n_samples for s in self.segments)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    def chunks(self, chunk_samples: int) -> Iterator[Chunk]:
        """The whole recording in chunks of at most ``chunk_samples`` rows."""
        step = max(1, int(chunk_samples))
        for seg in self.segments:
            for lo in range(0, seg.n_samples, step):
                hi = min(seg.n_samples, lo + step)
                data = np.ascontiguousarray(seg.read(lo, hi), dtype=np.float32)
                if seg.times is not None:
                    ts = float(seg.times[lo])
                else:
                    ts = seg.t0 + lo / self.sample_rate
                yield Chunk(data, seg.first_sample + lo, ts, self.sample_rate)

    def read_all(self) -> np.ndarray:
        parts = [np.asarray(s.read(0, s.n_samples), dtype=np.float32) for s in self.segments]
        if not parts:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        return np.concatenate(parts)

    def close(self) -> None:
        """Release files (a no-op for most readers)."""

    def __enter__(self) -> RecordingSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SessionSource(RecordingSource):
    """One of our session folders (verified samples only; LSL times from the index)."""

    kind = "session"

    def __init__(self, folder: Path, session: Session | None = None) -> None:
        self.session = session or Session(Path(folder))
        s = self.session
        super().__init__(Path(folder).name, s.sample_rate, s.channel_ids, s.positions_um, [])
        if s.problems:
            log.warning("replaying %s: %s", folder, "; ".join(s.problems))

    @property
    def n_samples(self) -> int:
        return self.session.n_samples

    def chunks(self, chunk_samples: int) -> Iterator[Chunk]:
        return self.session.chunks(max(1, int(chunk_samples)))

    def read_all(self) -> np.ndarray:
        return self.session.read_all()


class SpikeInterfaceSource(RecordingSource):
    """Any SpikeInterface recording (a binary folder or anything ``spikeinterface.load``
    opens); traces scaled to µV when the recording has gains. A segment with a
    ``t_start`` starts at absolute sample ``round(t_start * rate)``."""

    kind = "spikeinterface"

    def __init__(self, recording_or_path: Any) -> None:
        import spikeinterface.core as sc

        if isinstance(recording_or_path, str | Path):
            try:
                rec = sc.load(Path(recording_or_path))
            except Exception as exc:  # SI raises many kinds for a bad folder
                raise RecordingError(
                    f"cannot read {recording_or_path} with SpikeInterface: {exc}",
                    path=str(recording_or_path),
                ) from exc
            name = Path(recording_or_path).name
        else:
            rec, name = recording_or_path, "recording"
        if not isinstance(rec, sc.BaseRecording):
            raise RecordingError(f"{name} holds a {type(rec).__name__}, not a recording")
        self.recording = rec
        fs = float(rec.get_sampling_frequency())
        scaled = bool(rec.has_scaleable_traces())
        segments = []
        cursor = 0
        for k in range(rec.get_num_segments()):
            n = int(rec.get_num_samples(k))
            t_start = rec.select_segments([k]).get_time_info().get("t_start")
            first = round(t_start * fs) if t_start is not None else cursor

            def read(lo: int, hi: int, k: int = k) -> np.ndarray:
                return np.asarray(
                    rec.get_traces(
                        segment_index=k, start_frame=lo, end_frame=hi, return_in_uV=scaled
                    ),
                    dtype=np.float32,
                )

            segments.append(SourceSegment(first, n, read, t0=first / fs))
            cursor = first + n
        try:
            positions = np.asarray(rec.get_channel_locations(), dtype=np.float64)
        except Exception:  # no probe attached
            positions = None
        ids = [str(c) for c in rec.get_channel_ids()]
        super().__init__(name, fs, ids, positions, segments)


class NwbSource(RecordingSource):
    """An NWB file's ``ElectricalSeries`` (the first one in ``acquisition`` unless
    ``series`` names one), scaled to µV with its ``conversion``, ``offset`` and
    ``channel_conversion``; times from ``starting_time`` + rate or ``timestamps``."""

    kind = "nwb"

    def __init__(self, path: Path, series: str | None = None) -> None:
        from pynwb import NWBHDF5IO
        from pynwb.ecephys import ElectricalSeries

        self._io = NWBHDF5IO(str(path), mode="r")
        try:
            nwb = self._io.read()
            candidates = {
                name: obj
                for name, obj in nwb.acquisition.items()
                if isinstance(obj, ElectricalSeries)
            }
            if not candidates:
                raise RecordingError(f"{path}: no ElectricalSeries in acquisition", path=str(path))
            if series is None:
                series = sorted(candidates)[0]
            if series not in candidates:
                raise RecordingError(
                    f"{path}: no ElectricalSeries named {series!r} (found {sorted(candidates)})",
                    path=str(path),
                )
            es = candidates[series]
            data = es.data
            scale = float(es.conversion) * 1e6
            offset = float(getattr(es, "offset", 0.0) or 0.0) * 1e6
            chan = (
                np.asarray(es.channel_conversion[:], dtype=np.float64)
                if es.channel_conversion is not None
                else None
            )
            gains = scale * (chan if chan is not None else 1.0)

            def read(lo: int, hi: int) -> np.ndarray:
                block = np.asarray(data[lo:hi], dtype=np.float64)
                if block.ndim == 1:
                    block = block[:, None]
                return (block * gains + offset).astype(np.float32)

            n = int(data.shape[0])
            if es.rate is not None:
                fs = float(es.rate)
                t0 = float(es.starting_time or 0.0)
                times = None
            else:
                times = np.asarray(es.timestamps[:], dtype=np.float64)
                fs = float(1.0 / np.median(np.diff(times))) if n > 1 else 1.0
                t0 = float(times[0]) if n else 0.0
            table = es.electrodes.table
            rows = np.asarray(es.electrodes.data[:], dtype=np.int64)
            positions = None
            for xs, ys in (("rel_x", "rel_y"), ("x", "y")):
                if xs in table.colnames and ys in table.colnames:
                    x = np.asarray(table[xs].data[:], dtype=np.float64)[rows]
                    y = np.asarray(table[ys].data[:], dtype=np.float64)[rows]
                    positions = np.column_stack([x, y])
                    break
            ids = [str(r) for r in rows]
            if "label" in table.colnames:
                labels = list(table["label"].data[:])
                ids = [str(labels[r]) for r in rows]
            first = round(t0 * fs)
            seg = SourceSegment(first, n, read, t0=t0, times=times)
            super().__init__(f"{Path(path).name}:{series}", fs, ids, positions, [seg])
        except Exception:
            self._io.close()
            raise

    def close(self) -> None:
        self._io.close()


class XdfSource(RecordingSource):
    """A multichannel numeric stream of an XDF file (as LabRecorder writes it).

    ``stream`` selects by name, type or source id; default: the regular-rate numeric
    stream with the most channels. Timestamps are the file's (synchronised, de-jittered
    by pyxdf) LSL times; the first sample is index 0. Channel labels and electrode
    locations come from the stream's ``desc/channels`` meta-data.
    """

    kind = "xdf"

    def __init__(self, path: Path, stream: str | None = None) -> None:
        import pyxdf

        try:
            streams, _header = pyxdf.load_xdf(str(path))
        except Exception as exc:  # pyxdf raises many kinds for a bad file
            raise RecordingError(f"cannot read XDF file {path}: {exc}", path=str(path)) from exc

        def field(s: dict[str, Any], key: str) -> str:
            value = s["info"].get(key, [""])
            return str(value[0]) if value else ""

        numeric = [
            s
            for s in streams
            if field(s, "channel_format") != "string"
            and float(field(s, "nominal_srate") or 0) > 0
            and np.asarray(s["time_series"]).ndim == 2
        ]
        if stream is not None:
            numeric = [
                s
                for s in numeric
                if stream in (field(s, "name"), field(s, "type"), field(s, "source_id"))
            ]
        if not numeric:
            found = [(field(s, "name"), field(s, "type")) for s in streams]
            raise RecordingError(
                f"{path}: no regular-rate numeric stream"
                + (f" matching {stream!r}" if stream else "")
                + f" (streams: {found})",
                path=str(path),
            )
        chosen = max(numeric, key=lambda s: int(field(s, "channel_count") or 0))
        values = np.asarray(chosen["time_series"], dtype=np.float32)
        times = np.asarray(chosen["time_stamps"], dtype=np.float64)
        fs = float(field(chosen, "nominal_srate"))
        n_ch = values.shape[1]
        ids, positions = _xdf_channels(chosen, n_ch)

        def read(lo: int, hi: int) -> np.ndarray:
            return values[lo:hi]

        seg = SourceSegment(
            0, values.shape[0], read, t0=float(times[0]) if len(times) else 0.0, times=times
        )
        super().__init__(f"{Path(path).name}:{field(chosen, 'name')}", fs, ids, positions, [seg])
        self.stream_info = chosen["info"]


def _xdf_channels(stream: dict[str, Any], n_ch: int) -> tuple[list[str], np.ndarray | None]:
    ids = [f"ch{i}" for i in range(n_ch)]
    positions = None
    try:
        desc = stream["info"]["desc"][0]
        channels = desc["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        return ids, None
    if len(channels) != n_ch:
        return ids, None
    pos = np.full((n_ch, 2), np.nan)
    for i, ch in enumerate(channels):
        label = ch.get("label", [None])[0] if isinstance(ch, dict) else None
        if label:
            ids[i] = str(label)
        try:
            loc = ch["location"][0]
            pos[i] = [float(loc["X"][0]), float(loc["Y"][0])]
        except (KeyError, IndexError, TypeError, ValueError):
            pass
    if not np.isnan(pos).any():
        positions = pos
    return ids, positions


def open_source(path: Path, *, stream: str | None = None) -> RecordingSource:
    """Open a recording for replay, choosing the reader from what ``path`` is:
    a session folder, a SpikeInterface folder, an ``.nwb`` file or an ``.xdf`` file
    (``stream`` selects the NWB series or XDF stream)."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"recording not found: {path}", path=str(path))
    if path.is_dir():
        if is_session(path):
            return SessionSource(path)
        return SpikeInterfaceSource(path)
    suffix = path.suffix.lower()
    if suffix == ".nwb":
        return NwbSource(path, stream)
    if suffix in (".xdf", ".xdfz"):
        return XdfSource(path, stream)
    raise RecordingError(
        f"cannot tell what kind of recording {path} is "
        "(expected a session or SpikeInterface folder, .nwb or .xdf)",
        path=str(path),
    )
