"""What flows between the decoder stages: feature frames, intention labels, decoder output.

Every row carries the absolute sample index one past the end of its bin
(``end_sample``) and that sample's LSL-clock time (``timestamp``, s), so a decoded value
can be traced back to the samples it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci.types import FloatArray, IntArray


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """Completed feature bins: ``values`` ``(k, n_units)`` (counts, or rates in Hz)."""

    values: FloatArray
    end_sample: IntArray
    timestamp: FloatArray
    sample_rate: float
    bin_s: float

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True, slots=True)
class Intention:
    """What the user meant, per row of a frame, for closed-loop decoder adaptation.

    ``velocity`` ``(k, n_out)``: intended kinematics when the task knows them. ``target``
    and ``cursor`` ``(k, n_out)``: positions for ReFIT-style re-labelling (the decoded
    velocity rotated toward the target). Rows of NaN are not used for adaptation.
    """

    velocity: FloatArray | None = None
    target: FloatArray | None = None
    cursor: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class DecoderOutput:
    """Decoded values ``(k, n_out)`` (e.g. velocity), one row per feature bin."""

    values: FloatArray
    end_sample: IntArray
    timestamp: FloatArray
    sample_rate: float

    def __len__(self) -> int:
        return int(self.values.shape[0])


def empty_output(n_out: int, sample_rate: float) -> DecoderOutput:
    """An output with no rows."""
    return DecoderOutput(np.zeros((0, n_out)), np.zeros(0, np.int64), np.zeros(0), sample_rate)
