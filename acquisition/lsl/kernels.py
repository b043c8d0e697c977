"""Per-pull checks of the LSL inlet as numba kernels: one pass each, no temporaries."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def copy_finite(src: np.ndarray, dst: np.ndarray) -> int:
    """Copy float32 ``src`` ``(n, n_channels)`` into ``dst``, NaN and inf set to 0;
    returns how many values were not finite."""
    n, c_count = src.shape
    bad = 0
    for t in range(n):
        for c in range(c_count):
            v = src[t, c]
            if np.isfinite(v):
                dst[t, c] = v
            else:
                dst[t, c] = 0.0
                bad += 1
    return bad


@numba.njit(cache=True, nogil=True)
def timestamp_steps_ok(ts: np.ndarray, rate: float, last_mark: float, tol: float) -> bool:
    """Whether every step of ``ts * rate`` (from ``last_mark``, in sample periods) is
    above 0.5 and at most ``tol``: no gap, duplicate or out-of-order sample."""
    prev = last_mark
    for i in range(ts.shape[0]):
        mark = ts[i] * rate
        step = mark - prev
        if not (step > 0.5 and step <= tol):
            return False
        prev = mark
    return True


@numba.njit(cache=True, nogil=True)
def counter_steps(data: np.ndarray, channel: int, last_mark: float, exact: float) -> int:
    """The counter channel ``channel`` of ``data``: 1 when it counts up by exactly one
    from ``last_mark``, 0 when it does not, -1 when a value is too large for float32 to
    hold exactly (``>= exact``; the timestamps must be used instead)."""
    prev = last_mark
    ok = 1
    for i in range(data.shape[0]):
        mark = np.float64(data[i, channel])
        if not mark < exact:
            return -1
        if mark - prev != 1.0:
            ok = 0
        prev = mark
    return ok


def warm_up() -> None:
    """Compile (or load from cache) the kernels of this module."""
    x = np.zeros((2, 2), dtype=np.float32)
    copy_finite(x, np.empty_like(x))
    timestamp_steps_ok(np.zeros(2), 1.0, 0.0, 1.5)
    counter_steps(x, 0, -1.0, 2.0**24)
