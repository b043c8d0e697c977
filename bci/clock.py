"""The one time authority: the LSL clock (seconds, monotonic, shared by LSL tools)."""

from __future__ import annotations

import ctypes
import sys

import pylsl


def now() -> float:
    """Current LSL-clock time in seconds (``pylsl.local_clock()``)."""
    return float(pylsl.local_clock())


_PR_SET_TIMERSLACK = 29


def tight_timers() -> bool:
    """Let the calling thread's sleeps end within microseconds of their target.

    Linux adds up to 50 µs of "timer slack" to a normal thread's sleeps (to batch
    wake-ups); a thread that paces a stream in 1 ms steps turns that into latency.
    Sets the slack of the calling thread to 1 ns (``prctl(PR_SET_TIMERSLACK)``, no
    privilege needed). Returns whether it took (``False`` off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
