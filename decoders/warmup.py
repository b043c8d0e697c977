"""Compile every numba kernel of the package before a real-time loop is armed.

``warm_up()`` runs each plasticity rule on each device, the spiking readout, both
feature extractors and each decoder with its adaptations on a few tiny chunks, so no
compilation (or cache load) lands inside the loop. Kernels are cached on disk
(``cache=True``), so after the first run this takes well under a second.
"""

from __future__ import annotations

import numpy as np

from bci.types import SpikeBatch, empty_spikes
from decoders.adaptive import DECODERS, RmlParams, SmoothBatchParams
from decoders.devices import DEVICES
from decoders.features import (
    BinnedCounts,
    CountFeaturesParams,
    ExponentialTraces,
    TraceFeaturesParams,
)
from decoders.frames import Intention
from decoders.plasticity import RULES
from decoders.readout import ReadoutParams, SpikingReadout

_FS = 30_000.0


def _batches(n_units: int, n: int = 4, size: int = 600) -> list[SpikeBatch]:
    out = []
    for c in range(n):
        spikes = empty_spikes(n_units)
        spikes["sample"] = c * size + np.arange(n_units) * (size // (n_units + 1))
        spikes["unit"] = np.arange(n_units)
        out.append(SpikeBatch(spikes, c * size, (c + 1) * size, c * size / _FS, _FS))
    return out


def warm_up() -> None:
    """Run every kernel once on tiny inputs (2 pre x 2 post units, 20 ms bins)."""
    batches = _batches(2)
    rng = np.random.default_rng(0)
    for device_cls in DEVICES.values():
        for rule_cls in RULES.values():
            device = device_cls(device_cls.Params(), (2, 2), rng)
            rule = rule_cls(rule_cls.Params(), 2, 2, device, _FS)
            for b in batches:
                rule.process(b, b)
            device.apply_change(np.full((2, 2), device.nominal_step * 1.5))
    device_cls = DEVICES["ideal"]
    device = device_cls(device_cls.Params(), (2, 2), rng)
    rule = RULES["pair_stdp"](RULES["pair_stdp"].Params(), 2, 2, device, _FS)
    readout = SpikingReadout(ReadoutParams(n_out=2), 2, device, _FS, rule)
    for b in batches:
        readout.process(b)
    for feats in (
        BinnedCounts(CountFeaturesParams(bin_ms=20.0), 2, _FS),
        ExponentialTraces(TraceFeaturesParams(bin_ms=20.0), 2, _FS),
    ):
        frames = [feats.process(b) for b in batches]
        for decoder_cls in DECODERS.values():
            for adaptation in (RmlParams(warmup_s=0.0), SmoothBatchParams(batch_s=0.02)):
                dec = decoder_cls(decoder_cls.Params(), 2, feats.bin_s, rng, adaptation)
                for frame in frames:
                    v = np.ones((len(frame), dec.n_out))
                    dec.process(frame, Intention(velocity=v, target=v, cursor=0 * v))
