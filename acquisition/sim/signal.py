"""Extracellular signal: spike waveforms on the probe, and recording noise.

Each neuron has one waveform shape (a sharp trough then a slower positive
repolarisation, normalised to a trough of -1) scaled per electrode by
``A / (1 + (d / r0)**2)`` (µV; ``d`` the 3-D distance in µm). Only electrodes above
``min_fraction`` of the neuron's peak are kept (a sparse footprint), so adding a spike
costs ``waveform length x footprint`` operations. A spike at step ``s`` starts its
waveform at sample ``s``; its trough, the ground-truth time, is at ``s + trough``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from acquisition.sim.config import NoiseConfig, WaveformConfig


@dataclass(frozen=True)
class Footprints:
    """Per-neuron waveform shapes and sparse electrode amplitudes (CSR by neuron)."""

    shapes: np.ndarray  # (n_neurons, W) float32, trough -1 at index `trough`
    trough: int  # samples from waveform start to trough
    indptr: np.ndarray  # (n_neurons + 1,)
    channels: np.ndarray  # electrode index per entry
    amplitudes: np.ndarray  # µV per entry (positive: the trough depth)

    @property
    def length(self) -> int:
        return int(self.shapes.shape[1])

    def nearest_channel(self, neuron: int) -> int:
        lo, hi = self.indptr[neuron], self.indptr[neuron + 1]
        return int(self.channels[lo + np.argmax(self.amplitudes[lo:hi])])

    def peak_uv(self, neuron: int) -> float:
        lo, hi = self.indptr[neuron], self.indptr[neuron + 1]
        return float(self.amplitudes[lo:hi].max()) if hi > lo else 0.0


def make_shapes(
    n: int, config: WaveformConfig, sample_rate_hz: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Random but plausible waveform shapes ``(n, W)`` and the trough index."""
    fs_ms = sample_rate_hz / 1000.0
    width = max(8, round(config.duration_ms * fs_ms))
    trough = min(width - 4, max(2, round(config.trough_ms * fs_ms)))
    t = (np.arange(width) - trough) / fs_ms  # ms relative to trough
    sigma1 = rng.uniform(0.07, 0.14, n)[:, None]
    ratio = rng.uniform(0.15, 0.45, n)[:, None]
    lag = rng.uniform(0.3, 0.55, n)[:, None]
    sigma2 = rng.uniform(0.2, 0.35, n)[:, None]
    shape = -np.exp(-0.5 * (t / sigma1) ** 2) + ratio * np.exp(-0.5 * ((t - lag) / sigma2) ** 2)
    # fade the tails to zero so that waveform edges never step
    taper = np.ones(width)
    edge = max(2, width // 8)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
    taper[:edge] = ramp
    taper[-edge:] = ramp[::-1]
    shape *= taper
    shape /= -shape[:, trough : trough + 1]  # trough exactly -1 at `trough`
    return shape.astype(np.float32), trough


def make_footprints(
    neuron_xyz: np.ndarray,
    electrode_xy: np.ndarray,
    config: WaveformConfig,
    sample_rate_hz: float,
    rng: np.random.Generator,
) -> Footprints:
    """Waveform shapes and sparse per-electrode amplitudes for every neuron."""
    n = neuron_xyz.shape[0]
    shapes, trough = make_shapes(n, config, sample_rate_hz, rng)
    peak = config.amplitude_uv * np.asarray(rng.lognormal(0.0, config.amplitude_sigma, size=n))
    electrode_xyz = np.column_stack([electrode_xy, np.zeros(len(electrode_xy))])
    indptr = np.zeros(n + 1, dtype=np.int64)
    channels: list[np.ndarray] = []
    amplitudes: list[np.ndarray] = []
    for j in range(n):
        d = np.linalg.norm(electrode_xyz - neuron_xyz[j], axis=1)
        amp = peak[j] / (1.0 + (d / config.r0_um) ** 2)
        keep = np.nonzero(amp >= config.min_fraction * amp.max())[0]
        channels.append(keep.astype(np.int64))
        amplitudes.append(amp[keep].astype(np.float32))
        indptr[j + 1] = indptr[j] + keep.size
    return Footprints(
        shapes=shapes,
        trough=trough,
        indptr=indptr,
        channels=np.concatenate(channels),
        amplitudes=np.concatenate(amplitudes),
    )


@njit(cache=True, nogil=True)
def add_spikes(
    acc: np.ndarray,
    offsets: np.ndarray,
    neurons: np.ndarray,
    n_spikes: int,
    shapes: np.ndarray,
    indptr: np.ndarray,
    channels: np.ndarray,
    amplitudes: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Add each spike's waveform into ``acc`` (samples x electrodes, µV) at ``offsets``;
    count the spike in ``counts[neuron]``."""
    width = shapes.shape[1]
    for s in range(n_spikes):
        j = neurons[s]
        o = offsets[s]
        counts[j] += 1
        for k in range(indptr[j], indptr[j + 1]):
            c = channels[k]
            a = amplitudes[k]
            for t in range(width):
                acc[o + t, c] += a * shapes[j, t]


@njit(cache=True, nogil=True)
def emit_samples(acc: np.ndarray, out: np.ndarray, width: int) -> None:
    """Add the first ``len(out)`` rows of ``acc`` into ``out``, then shift ``acc`` up by
    that many rows (keeping the ``width`` rows still to come) and zero the rest."""
    n, c = out.shape
    for t in range(n):
        for ch in range(c):
            out[t, ch] += acc[t, ch]
    for t in range(width):
        for ch in range(c):
            acc[t, ch] = acc[t + n, ch]
    for t in range(width, width + n):
        for ch in range(c):
            acc[t, ch] = 0.0


@njit(cache=True, nogil=True)
def fill_rows(out: np.ndarray, r0: int, r1: int, bias: np.ndarray, extra: np.ndarray) -> None:
    """``out[r0:r1, j] = bias[j] + extra[j]`` for every column ``j``."""
    for t in range(r0, r1):
        for j in range(out.shape[1]):
            out[t, j] = bias[j] + extra[j]


# 1/f ("pink") noise: a 3-pole/3-zero IIR approximation of a -10 dB/decade slope
# over three decades (J. O. Smith, "Spectral Audio Signal Processing").
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


def _impulse_energy(b: np.ndarray, a: np.ndarray, n: int = 200_000) -> float:
    from scipy.signal import lfilter

    impulse = np.zeros(n)
    impulse[0] = 1.0
    return float(np.sum(lfilter(b, a, impulse) ** 2))


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables of the 128-layer ziggurat for the standard normal (Marsaglia and Tsang,
    "The ziggurat method for generating random variables", J. Stat. Softw. 2000)."""
    m1 = 2147483648.0
    dn = tn = 3.442619855899
    vn = 9.91256303526217e-3
    kn = np.zeros(128, dtype=np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_ZIG_KN, _ZIG_WN, _ZIG_FN = _ziggurat_tables()


@njit(cache=True, nogil=True, inline="always")
def _next(state: np.ndarray, ch: int) -> np.uint64:
    """xorshift64* step of channel ``ch``'s stream."""
    x = state[ch]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[ch] = x
    return x * np.uint64(2685821657736338717)


@njit(cache=True, nogil=True, inline="always")
def _uniform(state: np.ndarray, ch: int) -> float:
    """Uniform in (0, 1] from 53 bits of channel ``ch``'s stream."""
    return (float(_next(state, ch) >> np.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def _normal_slow(
    hz: int, state: np.ndarray, ch: int, kn: np.ndarray, wn: np.ndarray, fn: np.ndarray
) -> float:
    """The ziggurat's rare path (about 1 % of draws): wedges and the tail."""
    while True:
        iz = hz & 127
        x = hz * wn[iz]
        if iz == 0:  # the tail beyond r = 3.4426
            while True:
                x = -math.log(_uniform(state, ch)) * 0.2904764
                y = -math.log(_uniform(state, ch))
                if y + y >= x * x:
                    break
            return 3.442620 + x if hz > 0 else -3.442620 - x
        if fn[iz] + _uniform(state, ch) * (fn[iz - 1] - fn[iz]) < math.exp(-0.5 * x * x):
            return x
        hz = _signed32(_next(state, ch))
        iz = hz & 127
        if abs(hz) < kn[iz]:
            return hz * wn[iz]


@njit(cache=True, nogil=True, inline="always")
def _signed32(r: np.uint64) -> int:
    """The top 32 bits of ``r`` as a signed integer."""
    hz = np.int64(r >> np.uint64(32))
    return int(hz - 4294967296) if hz >= 2147483648 else int(hz)


@njit(cache=True, nogil=True)
def noise_kernel(
    out: np.ndarray,
    state: np.ndarray,
    b: np.ndarray,
    a: np.ndarray,
    z: np.ndarray,
    kn: np.ndarray,
    wn: np.ndarray,
    fn: np.ndarray,
) -> None:
    """Fill ``out`` (samples x channels) with Gaussian noise shaped by the IIR ``b, a``.

    Each channel has its own xorshift64* stream (``state``, never 0) drawn in time
    order, so the output depends only on the seed, never on how the samples are split
    into calls. The filter is direct form II transposed with state ``z``
    ``(order, channels)``.
    """
    order = z.shape[0]
    n, c = out.shape
    for t in range(n):
        for ch in range(c):
            hz = _signed32(_next(state, ch))  # ziggurat (Marsaglia & Tsang), fast path
            iz = hz & 127
            g = hz * wn[iz] if abs(hz) < kn[iz] else _normal_slow(hz, state, ch, kn, wn, fn)
            y = b[0] * g + z[0, ch]
            for k in range(order - 1):
                z[k, ch] = b[k + 1] * g - a[k + 1] * y + z[k + 1, ch]
            z[order - 1, ch] = b[order] * g - a[order] * y
            out[t, ch] = y


class NoiseGenerator:
    """Thermal (white) plus 1/f noise per channel, float32 µV, continuous across calls.

    One white Gaussian draw per sample is shaped by ``thermal + g * H_pink(z)``, so both
    parts cost one random number per sample; the RMS of each part is what the config
    states. The draws come from per-channel generators seeded from ``rng`` (see
    :func:`noise_kernel`), so calls with different block sizes give the same samples.
    """

    def __init__(self, config: NoiseConfig, n_channels: int, rng: np.random.Generator) -> None:
        self.config = config
        self.n_channels = n_channels
        gain_pink = config.pink_uv / np.sqrt(_impulse_energy(_PINK_B, _PINK_A))
        self._b = (config.thermal_uv * _PINK_A + gain_pink * _PINK_B).astype(np.float64)
        self._a = _PINK_A.copy()
        self._z = np.zeros((len(_PINK_A) - 1, n_channels), dtype=np.float64)
        seeds = rng.integers(1, 2**63, size=n_channels, dtype=np.int64)
        self._state = seeds.astype(np.uint64)
        self._silent = config.thermal_uv == 0 and config.pink_uv == 0

    def generate(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` rows of noise, ``(n_samples, n_channels)`` float32 µV."""
        out = np.empty((n_samples, self.n_channels), dtype=np.float32)
        self.generate_into(out)
        return out

    def generate_into(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` rows of noise into ``out`` (float32, C order)."""
        if self._silent:
            out[:] = 0.0
            return
        noise_kernel(out, self._state, self._b, self._a, self._z, _ZIG_KN, _ZIG_WN, _ZIG_FN)
