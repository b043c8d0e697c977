"""Config models of the ``decoders:`` section of a config file.

Method parameters live next to their implementation (one file per method) and are
collected into discriminated unions by each family's registry; this module assembles
them into the section. Units are in the field names (``_ms``, ``_s``, ``_hz``).
"""

from __future__ import annotations

from pydantic import Field

from bci.schema import StrictModel
from decoders.adaptive import AdaptationParams, DecoderParams, NoAdaptationParams
from decoders.adaptive.kalman import KalmanParams
from decoders.checkpoint import CheckpointParams
from decoders.devices import DeviceParams
from decoders.devices.ideal import IdealParams
from decoders.features import CountFeaturesParams, FeatureParams
from decoders.plasticity import PlasticityParams
from decoders.readout import ReadoutParams


class ReadoutSection(StrictModel):
    """Spiking readout: LIF output neurons behind plastic synapses on a device."""

    neurons: ReadoutParams = ReadoutParams()
    device: DeviceParams = IdealParams()
    plasticity: PlasticityParams | None = None
    w_init: float | None = Field(None, description="initial weight (default mid-range)")
    seed: int = Field(0, ge=0)


class DecoderSection(StrictModel):
    """From sorted units to a decoded variable: features, decoder, adaptation, checkpoints.

    ``n_units`` is the number of sorted units whose spikes feed the decoder (units with
    ids outside ``0..n_units-1`` are ignored). ``seed`` draws the random initial decoder.
    """

    n_units: int = Field(96, ge=1, le=100_000)
    features: FeatureParams = CountFeaturesParams()
    decoder: DecoderParams = KalmanParams()
    adaptation: AdaptationParams = NoAdaptationParams()
    checkpoint: CheckpointParams | None = None
    readout: ReadoutSection | None = None
    seed: int = Field(0, ge=0)


__all__ = ["DecoderSection", "ReadoutSection"]
