"""Spike detectors: a registry of methods, one file each.

A detector is a stage: ``process(filtered_chunk) -> Detections`` and ``reset()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from acquisition.config import ThresholdDetectorConfig
from acquisition.detection.base import Detections, neighbourhoods
from acquisition.detection.threshold import ThresholdDetector
from bci.errors import UnknownKindError

__all__ = ["DETECTORS", "Detections", "ThresholdDetector", "make_detector", "neighbourhoods"]

#: kind -> constructor ``(config, positions_um, sample_rate) -> detector``.
DETECTORS: dict[str, Callable[..., Any]] = {"threshold": ThresholdDetector}


def make_detector(
    config: ThresholdDetectorConfig,
    positions_um: np.ndarray,
    sample_rate: float,
    *,
    residual: bool = False,
) -> ThresholdDetector:
    """Build the detector ``config.kind`` names (``residual``: able to run a residual
    pass, see :meth:`ThresholdDetector.residual`)."""
    try:
        cls = DETECTORS[config.kind]
    except KeyError as exc:
        raise UnknownKindError(f"unknown detector kind {config.kind!r}", kind=config.kind) from exc
    detector: ThresholdDetector = cls(config, positions_um, sample_rate, residual=residual)
    return detector
