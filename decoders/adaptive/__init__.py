"""Adaptive decoders: a registry of one file per decoder.

To add a decoder: write ``mydecoder.py`` with a ``Params`` model (``kind: Literal[...]``)
and an :class:`~decoders.adaptive.base.AdaptiveDecoder` subclass, add the class to
``_DECODERS`` and its params to ``DecoderParams``.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from bci.errors import UnknownKindError
from decoders.adaptive.adaptation import (
    AdaptationParams,
    NoAdaptationParams,
    RmlParams,
    SmoothBatchParams,
)
from decoders.adaptive.base import AdaptiveDecoder
from decoders.adaptive.kalman import KalmanDecoder, KalmanParams
from decoders.adaptive.wiener import WienerDecoder, WienerParams

_DECODERS: tuple[type[AdaptiveDecoder], ...] = (KalmanDecoder, WienerDecoder)

DECODERS: dict[str, type[AdaptiveDecoder]] = {d.kind: d for d in _DECODERS}

#: The config union of every decoder's parameters, discriminated on ``kind``.
DecoderParams = Annotated[KalmanParams | WienerParams, Field(discriminator="kind")]


def decoder_class(kind: str) -> type[AdaptiveDecoder]:
    """The decoder registered under ``kind``."""
    try:
        return DECODERS[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown decoder {kind!r}; known: {sorted(DECODERS)}", kind=kind
        ) from None


def make_decoder(
    params: KalmanParams | WienerParams,
    n_units: int,
    bin_s: float,
    rng: np.random.Generator,
    adaptation: AdaptationParams | None = None,
) -> AdaptiveDecoder:
    """Build the decoder that ``params.kind`` names."""
    return decoder_class(params.kind)(params, n_units, bin_s, rng, adaptation)


__all__ = [
    "DECODERS",
    "AdaptationParams",
    "AdaptiveDecoder",
    "DecoderParams",
    "NoAdaptationParams",
    "RmlParams",
    "SmoothBatchParams",
    "decoder_class",
    "make_decoder",
]
