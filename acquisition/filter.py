"""The streaming filter stage: causal band-pass per channel, then a common reference."""

from __future__ import annotations

import numpy as np
from scipy import signal

from acquisition.config import FilterConfig
from acquisition.kernels.filter import REF_AVERAGE, REF_MEDIAN, REF_NONE, sosfilt_inplace
from bci.errors import ConfigError
from bci.types import Chunk

_REFERENCE = {"none": REF_NONE, "average": REF_AVERAGE, "median": REF_MEDIAN}


def design_sos(config: FilterConfig, sample_rate: float) -> np.ndarray:
    """Second-order sections of the Butterworth filter ``config`` describes."""
    nyq = sample_rate / 2.0
    if config.low_hz >= nyq:
        raise ConfigError(
            f"filter low_hz {config.low_hz} Hz is not below Nyquist ({nyq} Hz)",
            field="filter.low_hz",
            value=config.low_hz,
        )
    if config.high_hz is None or config.high_hz >= nyq * 0.98:
        sos = signal.butter(config.order, config.low_hz, "highpass", fs=sample_rate, output="sos")
    else:
        sos = signal.butter(
            config.order, [config.low_hz, config.high_hz], "bandpass", fs=sample_rate, output="sos"
        )
    return np.ascontiguousarray(sos, dtype=np.float64)


def trough_delay_samples(sos: np.ndarray, sample_rate: float) -> int:
    """How many samples the filter delays the trough of a typical spike.

    The typical spike is a negative Ricker wavelet of 0.1 ms width (zero mean, like an
    extracellular action potential, most of its power at 1-3 kHz).
    """
    n = int(0.02 * sample_rate)
    t = (np.arange(n) - n // 4) / sample_rate
    z = t / 1.0e-4
    pulse = -(1 - z**2) * np.exp(-0.5 * z**2)
    filtered = signal.sosfilt(sos, pulse)
    return int(np.argmin(filtered) - np.argmin(pulse))


class StreamingFilter:
    """Band-pass filter and re-reference chunks of raw samples, causally.

    Consumes :class:`~bci.types.Chunk` of float32 µV ``(n_samples, n_channels)`` and
    produces a chunk of the same shape and sample span, filtered. State is kept per
    channel between calls, so any cutting of a signal into chunks gives the same result
    as filtering it whole. ``delay_samples`` is the filter's delay of a spike trough.
    """

    def __init__(self, config: FilterConfig, n_channels: int, sample_rate: float) -> None:
        self.config = config
        self.n_channels = n_channels
        self.sample_rate = sample_rate
        self.sos = design_sos(config, sample_rate)
        self.delay_samples = trough_delay_samples(self.sos, sample_rate)
        self._zi = np.zeros((self.sos.shape[0], 2, n_channels), dtype=np.float64)
        self._row = np.empty(n_channels, dtype=np.float64)
        self._reference = _REFERENCE[config.reference]

    def reset(self) -> None:
        """Forget the filter state (as after a gap in the stream)."""
        self._zi[:] = 0.0

    def process(self, chunk: Chunk) -> Chunk:
        """Filter one chunk; returns a new chunk (its data is a fresh array)."""
        data = chunk.data
        if data.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {data.shape[1]}")
        out = np.empty(data.shape, dtype=np.float32)
        x = np.ascontiguousarray(data, dtype=np.float32)  # no copy for a float32 chunk
        sosfilt_inplace(self.sos, self._zi, x, out, self._row, self._reference)
        return Chunk(out, chunk.first_sample, chunk.timestamp, chunk.sample_rate)
