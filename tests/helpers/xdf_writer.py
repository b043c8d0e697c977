"""A minimal XDF 1.0 writer for tests (the format LabRecorder writes).

File: ``b"XDF:"`` then chunks ``[NumLengthBytes][Length][Tag u16][Content]`` where
Length counts the tag and content. Tags: 1 FileHeader (XML), 2 StreamHeader
(StreamId u32 + XML), 3 Samples (StreamId u32, varlen count, then per sample a
timestamp flag byte, optional float64 timestamp, values), 4 ClockOffset (StreamId,
collection time f64, offset f64), 6 StreamFooter (StreamId + XML). All little endian.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

_FORMATS = {
    "float32": ("<f4", np.float32),
    "double64": ("<f8", np.float64),
    "int32": ("<i4", np.int32),
    "int16": ("<i2", np.int16),
}


def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1, n])
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


@dataclass
class XdfStream:
    """One stream to write: ``data`` ``(n, n_channels)``, ``times`` ``(n,)`` in s."""

    name: str
    type: str
    data: np.ndarray
    times: np.ndarray
    srate: float
    channel_format: str = "float32"
    source_id: str = ""
    labels: Sequence[str] | None = None
    positions: np.ndarray | None = None
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)

    def header_xml(self, stream_id: int) -> bytes:
        n_ch = self.data.shape[1]
        channels = ""
        if self.labels is not None:
            rows = []
            for i, label in enumerate(self.labels):
                loc = ""
                if self.positions is not None:
                    x, y = self.positions[i][:2]
                    loc = f"<location><X>{x}</X><Y>{y}</Y><Z>0</Z></location>"
                rows.append(
                    f"<channel><label>{escape(label)}</label><unit>microvolts</unit>"
                    f"<type>EXTRACELLULAR</type>{loc}</channel>"
                )
            channels = "<channels>" + "".join(rows) + "</channels>"
        xml = (
            '<?xml version="1.0"?><info>'
            f"<name>{escape(self.name)}</name><type>{escape(self.type)}</type>"
            f"<channel_count>{n_ch}</channel_count><nominal_srate>{self.srate}</nominal_srate>"
            f"<channel_format>{self.channel_format}</channel_format>"
            f"<source_id>{escape(self.source_id)}</source_id>"
            "<version>1.1000000000000001</version><created_at>0</created_at>"
            f"<uid>uid-{stream_id}</uid><session_id>default</session_id>"
            f"<hostname>test</hostname><desc>{channels}</desc></info>"
        )
        return xml.encode()


def write_xdf(path: Path, streams: Sequence[XdfStream], samples_per_chunk: int = 100) -> None:
    """Write ``streams`` to ``path``, their sample chunks interleaved as LabRecorder does."""
    out = bytearray(b"XDF:")
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    for sid, s in enumerate(streams, start=1):
        out += _chunk(2, struct.pack("<I", sid) + s.header_xml(sid))
    cursors = [0] * len(streams)
    while any(c < len(s.times) for c, s in zip(cursors, streams, strict=True)):
        for k, s in enumerate(streams):
            sid = k + 1
            lo = cursors[k]
            hi = min(len(s.times), lo + samples_per_chunk)
            if lo >= hi:
                continue
            fmt, _dtype = _FORMATS[s.channel_format]
            body = bytearray(struct.pack("<I", sid)) + _varlen(hi - lo)
            values = np.ascontiguousarray(s.data[lo:hi], dtype=np.dtype(fmt))
            for i in range(hi - lo):
                body += b"\x08" + struct.pack("<d", float(s.times[lo + i]))
                body += values[i].tobytes()
            out += _chunk(3, bytes(body))
            cursors[k] = hi
            for t, off in s.clock_offsets:
                out += _chunk(4, struct.pack("<Idd", sid, t, off))
            s.clock_offsets = []
    for sid, s in enumerate(streams, start=1):
        footer = (
            '<?xml version="1.0"?><info>'
            f"<first_timestamp>{s.times[0]}</first_timestamp>"
            f"<last_timestamp>{s.times[-1]}</last_timestamp>"
            f"<sample_count>{len(s.times)}</sample_count></info>"
        )
        out += _chunk(6, struct.pack("<I", sid) + footer.encode())
    Path(path).write_bytes(bytes(out))
