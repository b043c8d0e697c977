"""What detectors produce, and electrode neighbourhoods by distance."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def neighbourhoods(positions_um: np.ndarray, radius_um: float) -> np.ndarray:
    """``(n_channels, k_max)`` int32: per electrode, the electrodes within ``radius_um``.

    Row ``c`` lists ``c`` first, then the others by increasing distance; ``-1`` pads.
    Neighbourhood is by distance on the probe, not by channel index.
    """
    pos = np.asarray(positions_um, dtype=np.float64)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    n = pos.shape[0]
    lists = []
    for c in range(n):
        idx = np.flatnonzero(d[c] <= radius_um + 1e-9)
        idx = idx[np.argsort(d[c, idx], kind="stable")]
        lists.append(idx)
    k_max = max(len(x) for x in lists)
    out = np.full((n, k_max), -1, dtype=np.int32)
    for c, idx in enumerate(lists):
        out[c, : len(idx)] = idx
    return out


@dataclass(frozen=True, slots=True)
class Detections:
    """Spikes found in the samples decided by one call of a detector.

    ``samples`` (int64, absolute index of the filtered peak), ``channels`` (int32, peak
    electrode), ``amplitudes`` (float32 µV, signed filtered value at the peak),
    ``snippets`` (float32 µV, ``(n, n_window, k)`` on the peak electrode's snippet
    neighbourhood, ``pre`` samples before the peak). ``first_sample``/``end_sample``
    give the span of peak samples that was decided; ``timestamp`` is the LSL time of
    ``first_sample``. ``weak`` (bool, or ``None``: all strong) flags the candidates a
    detector found below its threshold (or in a big spike's shadow): a sorter keeps them
    only when they match a unit, and they are never reported otherwise.
    """

    samples: np.ndarray
    channels: np.ndarray
    amplitudes: np.ndarray
    snippets: np.ndarray
    first_sample: int
    end_sample: int
    timestamp: float
    sample_rate: float
    noise: np.ndarray | None = None  # (n_channels,) µV noise when decided
    weak: np.ndarray | None = None  # (n,) bool: a candidate to confirm

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def select(self, keep: np.ndarray) -> Detections:
        """The spikes where ``keep`` (bool or indices) holds, in order."""
        return Detections(
            samples=self.samples[keep],
            channels=self.channels[keep],
            amplitudes=self.amplitudes[keep],
            snippets=self.snippets[keep],
            first_sample=self.first_sample,
            end_sample=self.end_sample,
            timestamp=self.timestamp,
            sample_rate=self.sample_rate,
            noise=self.noise,
            weak=None if self.weak is None else self.weak[keep],
        )

    def added(
        self,
        samples: np.ndarray,
        channels: np.ndarray,
        amplitudes: np.ndarray,
        snippets: np.ndarray,
    ) -> tuple[Detections, np.ndarray]:
        """These spikes and the given ones, in sample order (the span, time and noise
        stay these: added spikes may precede ``first_sample``), and the order applied
        to the concatenation (these first), to reorder anything kept beside them."""
        all_samples = np.concatenate([self.samples, samples])
        order = np.argsort(all_samples, kind="stable")
        out = Detections(
            samples=all_samples[order],
            channels=np.concatenate([self.channels, channels])[order],
            amplitudes=np.concatenate([self.amplitudes, amplitudes])[order],
            snippets=np.concatenate([self.snippets, snippets])[order],
            first_sample=self.first_sample,
            end_sample=self.end_sample,
            timestamp=self.timestamp,
            sample_rate=self.sample_rate,
            noise=self.noise,
        )
        return out, order

    def strong(self) -> Detections:
        """Without the weak candidates (what a detector alone reports)."""
        if self.weak is None:
            return self
        return replace(self.select(~self.weak) if self.weak.any() else self, weak=None)
