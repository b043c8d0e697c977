"""The one time authority: the LSL clock (seconds, monotonic, shared by LSL tools)."""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable

import pylsl


def _lsl_now() -> float:
    return float(pylsl.local_clock())


def _same_as_monotonic() -> bool:
    """Whether ``time.monotonic()`` reads the LSL clock (liblsl's ``steady_clock`` is
    CLOCK_MONOTONIC on Linux): checked on this machine, a few times over."""
    if not sys.platform.startswith("linux"):
        return False
    for _ in range(5):
        before = time.monotonic()
        lsl = _lsl_now()
        after = time.monotonic()
        if not before - 1e-6 <= lsl <= after + 1e-6:
            return False
    return True


#: Current LSL-clock time in seconds (``pylsl.local_clock()``). Where that is
#: ``time.monotonic()`` (Linux), it is read without pylsl's ctypes call, which costs
#: 1 µs warm and 10-20 µs once its code has left the cache, as it has between a
#: closed loop's commands.
now: Callable[[], float] = time.monotonic if _same_as_monotonic() else _lsl_now


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
