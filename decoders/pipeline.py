"""The decoder stages wired together from a ``decoders:`` config section.

:class:`DecoderPipeline` consumes :class:`~bci.types.SpikeBatch` es and produces a
:class:`~decoders.frames.DecoderOutput` per batch (rows for the feature bins the batch
completed), checkpointing its state at the configured interval of sample time.
:func:`build_readout` builds the spiking readout with its device and plasticity rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bci.types import SpikeBatch
from decoders.adaptive import make_decoder
from decoders.checkpoint import Checkpoint, DecoderCheckpointer, StateBundle
from decoders.config import DecoderSection, ReadoutSection
from decoders.devices import make_device
from decoders.features import make_features
from decoders.frames import DecoderOutput, FeatureFrame, Intention
from decoders.plasticity import make_rule
from decoders.readout import SpikingReadout

IntentionSource = Callable[[FeatureFrame], Intention | None]


class DecoderPipeline:
    """Spike batches in, decoded rows out: features, adaptive decoder, checkpoints."""

    def __init__(self, section: DecoderSection, sample_rate: float) -> None:
        self.section = section
        self.sample_rate = float(sample_rate)
        self.features = make_features(section.features, section.n_units, sample_rate)
        self.decoder = make_decoder(
            section.decoder,
            section.n_units,
            self.features.bin_s,
            np.random.default_rng(section.seed),
            section.adaptation,
        )
        self.state = StateBundle(features=self.features, decoder=self.decoder)
        self.checkpointer: DecoderCheckpointer | None = None
        if section.checkpoint is not None:
            self.checkpointer = DecoderCheckpointer.from_params(
                self.state, section.checkpoint, sample_rate
            )

    def restore(self) -> Checkpoint | None:
        """Resume from the newest readable checkpoint, if checkpointing is configured."""
        return None if self.checkpointer is None else self.checkpointer.restore()

    def process(self, batch: SpikeBatch, intention: IntentionSource | None = None) -> DecoderOutput:
        frame = self.features.process(batch)
        out = self.decoder.process(frame, intention(frame) if intention and len(frame) else None)
        if self.checkpointer is not None:
            self.checkpointer.tick(batch.end_sample)
        return out

    def shutdown(self, end_sample: int) -> None:
        """Checkpoint on a clean stop."""
        if self.checkpointer is not None:
            self.checkpointer.shutdown(end_sample)

    def rollback(self) -> Checkpoint:
        """Back to the newest known-good checkpoint."""
        if self.checkpointer is None:
            raise RuntimeError("checkpointing is not configured")
        return self.checkpointer.rollback()

    def reset(self) -> None:
        self.features.reset()
        self.decoder.reset()


def build_readout(section: ReadoutSection, n_in: int, sample_rate: float) -> SpikingReadout:
    """The spiking readout of a ``readout:`` section, fed by ``n_in`` sorted units."""
    shape = (n_in, section.neurons.n_out)
    rng = np.random.default_rng(section.seed)
    device = make_device(section.device, shape, rng, section.w_init)
    rule = None
    if section.plasticity is not None:
        rule = make_rule(section.plasticity, n_in, section.neurons.n_out, device, sample_rate)
    return SpikingReadout(section.neurons, n_in, device, sample_rate, rule)
