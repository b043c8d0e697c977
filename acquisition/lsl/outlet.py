"""LSL outlets: raw multichannel data and irregular event streams.

Raw streams are float32 µV at a regular rate; channel labels, units, types and
electrode positions go into the stream's ``desc`` following the XDF meta-data
conventions (``channels/channel/{label,unit,type,location/{X,Y,Z}}``), so LabRecorder
and other LSL tools record them. Event streams (spikes, ground truth) are irregular,
float64 (exact sample indices up to 2**53), one sample per event, stamped with the
event's LSL time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pylsl

from bci.errors import StreamError
from bci.types import Chunk


def raw_stream_info(
    name: str,
    stream_type: str,
    source_id: str,
    sample_rate_hz: float,
    labels: Sequence[str],
    positions_um: np.ndarray | None = None,
    channel_type: str = "EXTRACELLULAR",
    manufacturer: str = "bci-loop",
    extra: dict[str, str] | None = None,
) -> pylsl.StreamInfo:
    """StreamInfo for float32 µV data with XDF channel metadata.

    Electrode locations are in µm (``desc/channels/channel/location``, with
    ``desc/channels/location_unit`` saying so; XDF's EEG convention is mm).
    """
    info = pylsl.StreamInfo(
        name, stream_type, len(labels), sample_rate_hz, pylsl.cf_float32, source_id
    )
    desc = info.desc()
    desc.append_child_value("manufacturer", manufacturer)
    channels = desc.append_child("channels")
    channels.append_child_value("location_unit", "micrometers")
    for i, label in enumerate(labels):
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", "microvolts")
        ch.append_child_value("type", channel_type)
        if positions_um is not None:
            loc = ch.append_child("location")
            x, y = positions_um[i, 0], positions_um[i, 1]
            z = positions_um[i, 2] if positions_um.shape[1] > 2 else 0.0
            loc.append_child_value("X", f"{x:.3f}")
            loc.append_child_value("Y", f"{y:.3f}")
            loc.append_child_value("Z", f"{z:.3f}")
    for key, value in (extra or {}).items():
        desc.append_child_value(key, value)
    return info


def event_stream_info(
    name: str, stream_type: str, source_id: str, fields: Sequence[str]
) -> pylsl.StreamInfo:
    """StreamInfo for an irregular float64 event stream with one channel per field."""
    info = pylsl.StreamInfo(
        name, stream_type, len(fields), pylsl.IRREGULAR_RATE, pylsl.cf_double64, source_id
    )
    channels = info.desc().append_child("channels")
    for f in fields:
        channels.append_child("channel").append_child_value("label", f)
    return info


class RawOutlet:
    """Pushes :class:`~bci.types.Chunk` objects to an LSL outlet, stamped on the LSL clock.

    Each push stamps the chunk's last sample with its own LSL time
    (``chunk.timestamp + (n - 1) / rate``); LSL back-dates the earlier samples.
    """

    def __init__(self, info: pylsl.StreamInfo, chunk_size: int = 0, max_buffered_s: int = 60):
        try:
            self._outlet = pylsl.StreamOutlet(info, chunk_size, max_buffered_s)
        except Exception as exc:
            raise StreamError(f"cannot open LSL outlet {info.name()!r}: {exc}") from exc
        self.info = info
        self.n_channels = info.channel_count()
        self.samples_pushed = 0

    def push(self, chunk: Chunk) -> None:
        if chunk.n_channels != self.n_channels:
            raise StreamError(
                "chunk has the wrong channel count for this outlet",
                expected=self.n_channels,
                got=chunk.n_channels,
            )
        data = np.ascontiguousarray(chunk.data, dtype=np.float32)
        last = chunk.timestamp + (chunk.n_samples - 1) / chunk.sample_rate
        self._outlet.push_chunk(data, last, True)
        self.samples_pushed += chunk.n_samples

    def have_consumers(self) -> bool:
        return bool(self._outlet.have_consumers())

    def wait_for_consumers(self, timeout_s: float) -> bool:
        return bool(self._outlet.wait_for_consumers(timeout_s))

    def close(self) -> None:
        del self._outlet


class EventOutlet:
    """Pushes events (rows of float64 fields) each stamped with its own LSL time."""

    def __init__(self, info: pylsl.StreamInfo, max_buffered_s: int = 360):
        try:
            self._outlet = pylsl.StreamOutlet(info, 1, max_buffered_s)
        except Exception as exc:
            raise StreamError(f"cannot open LSL outlet {info.name()!r}: {exc}") from exc
        self.info = info
        self.events_pushed = 0

    def push(self, rows: np.ndarray, times: np.ndarray) -> None:
        """Push ``rows`` ``(n, n_fields)`` with LSL times ``times`` ``(n,)``."""
        for row, t in zip(np.asarray(rows, dtype=np.float64), times, strict=True):
            self._outlet.push_sample(row, float(t))
        self.events_pushed += len(rows)

    def have_consumers(self) -> bool:
        return bool(self._outlet.have_consumers())

    def close(self) -> None:
        del self._outlet


def read_positions(info: pylsl.StreamInfo) -> np.ndarray | None:
    """Electrode positions ``(n_channels, 2)`` (x, y) from a StreamInfo's ``desc``.

    Reads ``channels/channel/location/{X,Y}``; converts millimetres to µm when
    ``channels/location_unit`` is absent (the XDF default is mm). ``None`` when any
    channel lacks a location.
    """
    channels = info.desc().child("channels")
    unit = channels.child_value("location_unit")
    scale = 1.0 if unit in ("micrometers", "um", "µm") else 1000.0
    xy = []
    ch = channels.child("channel")
    while not ch.empty():
        loc = ch.child("location")
        x, y = loc.child_value("X"), loc.child_value("Y")
        if loc.empty() or x == "" or y == "":
            return None
        xy.append((float(x) * scale, float(y) * scale))
        ch = ch.next_sibling("channel")
    if len(xy) != info.channel_count():
        return None
    return np.array(xy, dtype=np.float64)
