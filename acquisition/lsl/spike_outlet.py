"""An LSL outlet of sorted spike events, so other tools (LabRecorder, viewers) see them."""

from __future__ import annotations

import ctypes

import numpy as np
import pylsl
from pylsl.util import handle_error

from acquisition.config import SpikeOutletConfig
from bci.types import SpikeBatch

SPIKE_CHANNELS = ("sample", "channel", "unit", "amplitude_uv")


class SpikeOutlet:
    """Irregular-rate float64 LSL stream, one sample per spike: absolute sample index of
    the trough, electrode, unit id, amplitude (µV); the LSL timestamp is the trough time."""

    def __init__(self, config: SpikeOutletConfig, source_id: str) -> None:
        info = pylsl.StreamInfo(
            config.name, config.type, len(SPIKE_CHANNELS), 0.0, "double64", source_id
        )
        chans = info.desc().append_child("channels")
        for label in SPIKE_CHANNELS:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "microvolts" if label == "amplitude_uv" else "")
        self.outlet = pylsl.StreamOutlet(info)
        self.pushed = 0
        self._data = np.empty((0, len(SPIKE_CHANNELS)), dtype=np.float64)
        self._stamps = np.empty(0, dtype=np.float64)

    def push(self, batch: SpikeBatch) -> None:
        """Send the spikes of ``batch`` (nothing when it is empty)."""
        n = len(batch)
        if not n:
            return
        if n > self._stamps.shape[0]:
            size = max(64, 2 * n)
            self._data = np.empty((size, len(SPIKE_CHANNELS)), dtype=np.float64)
            self._stamps = np.empty(size, dtype=np.float64)
        s = batch.spikes
        data = self._data
        data[:n, 0] = s["sample"]
        data[:n, 1] = s["channel"]
        data[:n, 2] = s["unit"]
        data[:n, 3] = s["amplitude"]
        self._stamps[:n] = s["time"]
        out = self.outlet
        # one liblsl call from the preallocated buffers (pylsl's push_chunk would copy
        # the timestamps through a Python list)
        handle_error(
            out.do_push_chunk_n(
                out.obj,
                ctypes.c_void_p(data.ctypes.data),
                ctypes.c_long(n * len(SPIKE_CHANNELS)),
                ctypes.c_void_p(self._stamps.ctypes.data),
                ctypes.c_int(1),
            )
        )
        self.pushed += n
