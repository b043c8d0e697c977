"""An LSL outlet of sorted spike events, so other tools (LabRecorder, viewers) see them."""

from __future__ import annotations

import numpy as np
import pylsl

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

    def push(self, batch: SpikeBatch) -> None:
        """Send the spikes of ``batch`` (nothing when it is empty)."""
        n = len(batch)
        if not n:
            return
        s = batch.spikes
        data = np.column_stack(
            [s["sample"].astype(np.float64), s["channel"], s["unit"], s["amplitude"]]
        )
        self.outlet.push_chunk(np.ascontiguousarray(data), s["time"].tolist())
        self.pushed += n
