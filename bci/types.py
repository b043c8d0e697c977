"""Shared data types that move between stages.

Every object that moves carries the absolute sample index of the data it came from
and the LSL-clock time (``pylsl.local_clock()`` seconds) of that sample, so the
latency of any decision can be traced back to the sample that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: One sorted (or detected) spike. ``sample`` is the absolute sample index of the trough,
#: ``time`` its LSL-clock time in s, ``channel`` the electrode index with the largest
#: amplitude, ``unit`` the sorted unit id (-1 when unsorted), ``amplitude`` in µV.
SPIKE_DTYPE = np.dtype(
    [
        ("sample", np.int64),
        ("time", np.float64),
        ("channel", np.int32),
        ("unit", np.int32),
        ("amplitude", np.float32),
    ]
)

#: One ground-truth spike of a simulated neuron: absolute sample index of the
#: extracellular trough, and the neuron's global index.
GT_SPIKE_DTYPE = np.dtype([("sample", np.int64), ("neuron", np.int32)])

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A block of multichannel samples.

    ``data`` is ``(n_samples, n_channels)`` float32 in µV; ``first_sample`` is the
    absolute index of row 0 since the stream started; ``timestamp`` is the LSL-clock
    time (s) of row 0; ``sample_rate`` in Hz.
    """

    data: Float32Array
    first_sample: int
    timestamp: float
    sample_rate: float

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])

    @property
    def end_sample(self) -> int:
        """Absolute index one past the last sample of the chunk."""
        return self.first_sample + self.n_samples

    def time_of(self, sample: int | IntArray) -> float | FloatArray:
        """LSL-clock time (s) of an absolute sample index, on this chunk's clock."""
        return self.timestamp + (np.asarray(sample) - self.first_sample) / self.sample_rate


def empty_spikes(n: int = 0) -> np.ndarray:
    """A zeroed spike array of ``n`` rows with :data:`SPIKE_DTYPE`."""
    return np.zeros(n, dtype=SPIKE_DTYPE)


@dataclass(frozen=True, slots=True)
class SpikeBatch:
    """The spikes found in one chunk, as a :data:`SPIKE_DTYPE` structured array.

    ``first_sample``/``end_sample`` give the absolute sample span the batch covers
    (a batch with no spikes still says which samples were searched); ``timestamp`` is
    the LSL time of ``first_sample``.
    """

    spikes: np.ndarray
    first_sample: int
    end_sample: int
    timestamp: float
    sample_rate: float
    meta: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spikes.dtype != SPIKE_DTYPE:
            raise TypeError(f"SpikeBatch.spikes must have SPIKE_DTYPE, got {self.spikes.dtype}")

    def __len__(self) -> int:
        return int(self.spikes.shape[0])
