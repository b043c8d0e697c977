"""Spike detection kernels: online MAD noise, locally exclusive peaks, snippets."""

from __future__ import annotations

import numba
import numpy as np

#: Polarity codes of :func:`detect_peaks`.
NEG, POS, BOTH = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def track_median_abs(x: np.ndarray, med: np.ndarray, eta: float) -> None:
    """Follow the median of ``|x|`` per channel, sample by sample, in place.

    ``x`` is ``(n_samples, n_channels)``; ``med`` the ``(n_channels,)`` float64 running
    estimate; each sample moves it by the relative step ``eta`` up or down, so it settles
    where half the samples lie above it (time constant ``1 / eta`` samples).
    """
    n, c_count = x.shape
    for t in range(n):
        for c in range(c_count):
            a = abs(np.float64(x[t, c]))
            if a > med[c]:
                med[c] += eta * med[c]
            else:
                med[c] -= eta * med[c]


@numba.njit(cache=True, nogil=True)
def _value(x: float, polarity: int) -> float:
    if polarity == NEG:
        return -x
    if polarity == POS:
        return x
    return abs(x)


@numba.njit(cache=True, nogil=True)
def detect_peaks(
    buf: np.ndarray,
    start: int,
    stop: int,
    thresholds: np.ndarray,
    neighbours: np.ndarray,
    exclude: int,
    polarity: int,
    out_t: np.ndarray,
    out_c: np.ndarray,
    row0: int,
    shadow: int,
    shadow_fraction: float,
    shadow_until: np.ndarray,
    shadow_value: np.ndarray,
    shadow_neighbours: np.ndarray,
    weak_thresholds: np.ndarray,
    weak_shadow_ratio: float,
    out_w: np.ndarray,
    shadow_start: int,
    shadow_from: np.ndarray,
    shoulder: int,
    max_shoulder: float,
    broad_weak: bool,
) -> int:
    """Locally exclusive threshold crossings among rows ``[start, stop)`` of ``buf``.

    ``buf`` is ``(n_rows, n_channels)`` filtered µV with at least ``exclude`` rows of
    context before ``start`` and after ``stop``. A sample ``(t, c)`` is a peak when its
    value (``-x``, ``x`` or ``|x|`` by ``polarity``) exceeds ``thresholds[c]`` and is the
    largest over ``t ± exclude`` on every electrode of ``neighbours[c]`` (``-1`` pads);
    ties go to the earlier sample, then the lower channel, so exactly one of equal values
    wins. Writes rows and channels to ``out_t`` / ``out_c``; returns how many (stops when
    they are full).

    Shadowing: a peak of value ``v`` at absolute sample ``row0 + t`` hides, from
    ``shadow_start`` to ``shadow`` samples after it on the electrodes
    ``shadow_neighbours[c]``, every candidate smaller than ``shadow_fraction * v`` (the
    after-lobes of a large spike). The state is kept across calls in ``shadow_from`` /
    ``shadow_until`` (absolute samples) and ``shadow_value`` per electrode;
    candidates are decided in time order, so the result does not depend on chunking.

    Weak peaks: a locally exclusive peak between ``weak_thresholds[c]`` and
    ``thresholds[c]`` (set both equal for none), or one that the shadow hides but that
    reaches ``weak_shadow_ratio`` times the shadow's value (> 1: none), is written too
    with ``out_w = 1`` (else 0), for a later stage to confirm; a weak peak casts no
    shadow, so the strong peaks are the same either way.

    Broad peaks: with ``max_shoulder > 0``, a peak whose mean value ``shoulder`` samples
    before and after it exceeds ``max_shoulder`` times its own is a slow hump, not the
    sharp trough of a spike (the filter's after-lobe of a large spike, plus noise): it
    is weak when ``broad_weak``, else dropped.
    """
    c_count = buf.shape[1]
    k_count = neighbours.shape[1]
    n_out = 0
    cap = out_t.shape[0]
    for t in range(start, stop):
        for c in range(c_count):
            v = _value(buf[t, c], polarity)
            if v <= weak_thresholds[c]:
                continue
            weak = v <= thresholds[c]
            if shadow_from[c] <= row0 + t <= shadow_until[c] and v < shadow_value[c]:
                if v < weak_shadow_ratio * shadow_value[c]:
                    continue
                weak = True
            is_peak = True
            # cheap test first: the same electrode over time
            for dt in range(-exclude, exclude + 1):
                if dt == 0:
                    continue
                w = _value(buf[t + dt, c], polarity)
                if w > v or (w == v and dt < 0):
                    is_peak = False
                    break
            if not is_peak:
                continue
            for k in range(k_count):
                n = neighbours[c, k]
                if n < 0:
                    break
                if n == c:
                    continue
                for dt in range(-exclude, exclude + 1):
                    w = _value(buf[t + dt, n], polarity)
                    if w > v or (w == v and (dt < 0 or (dt == 0 and n < c))):
                        is_peak = False
                        break
                if not is_peak:
                    break
            if is_peak and max_shoulder > 0.0:
                sides = _value(buf[t - shoulder, c], polarity) + _value(
                    buf[t + shoulder, c], polarity
                )
                if sides > 2.0 * max_shoulder * v:
                    if not broad_weak:
                        continue
                    weak = True
            if is_peak:
                if n_out == cap:
                    return n_out
                out_t[n_out] = t
                out_c[n_out] = c
                out_w[n_out] = 1 if weak else 0
                n_out += 1
                if shadow > 0 and not weak:
                    until = row0 + t + shadow
                    for k in range(shadow_neighbours.shape[1]):
                        n = shadow_neighbours[c, k]
                        if n < 0:
                            break
                        if until > shadow_until[n] or shadow_fraction * v > shadow_value[n]:
                            shadow_from[n] = row0 + t + shadow_start
                            shadow_until[n] = until
                            shadow_value[n] = shadow_fraction * v
    return n_out


@numba.njit(cache=True, nogil=True)
def extract_snippets(
    buf: np.ndarray,
    rows: np.ndarray,
    channels: np.ndarray,
    neighbours: np.ndarray,
    pre: int,
    out: np.ndarray,
) -> None:
    """Cut ``out`` ``(n_spikes, n_window, n_neighbours)`` from ``buf`` around each peak.

    Snippet ``i`` covers rows ``rows[i] - pre`` onward on the electrodes
    ``neighbours[channels[i]]``; padded (``-1``) electrodes give zeros.
    """
    n_win = out.shape[1]
    k_count = out.shape[2]
    for i in range(rows.shape[0]):
        r0 = rows[i] - pre
        c = channels[i]
        for k in range(k_count):
            n = neighbours[c, k]
            if n < 0:
                for s in range(n_win):
                    out[i, s, k] = 0.0
            else:
                for s in range(n_win):
                    out[i, s, k] = buf[r0 + s, n]


def warm_up() -> None:
    buf = np.zeros((10, 2), dtype=np.float32)
    med = np.ones(2)
    track_median_abs(buf, med, 1e-3)
    nb = np.array([[0, 1], [1, 0]], dtype=np.int32)
    out_t = np.zeros(4, dtype=np.int64)
    out_c = np.zeros(4, dtype=np.int32)
    until = np.zeros(2, dtype=np.int64)
    value = np.zeros(2, dtype=np.float32)
    for pol in (NEG, POS, BOTH):
        detect_peaks(
            buf,
            2,
            8,
            np.ones(2, dtype=np.float32),
            nb,
            2,
            pol,
            out_t,
            out_c,
            0,
            3,
            0.5,
            until,
            value,
            nb,
            np.full(2, 0.5, dtype=np.float32),
            0.5,
            np.zeros(4, dtype=np.uint8),
            1,
            np.zeros(2, dtype=np.int64),
            1,
            0.2,
            pol == BOTH,
        )
    extract_snippets(buf, out_t[:1] + 2, out_c[:1], nb, 1, np.zeros((1, 3, 2), dtype=np.float32))
