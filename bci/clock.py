"""The one time authority: the LSL clock (seconds, monotonic, shared by LSL tools)."""

from __future__ import annotations

import pylsl


def now() -> float:
    """Current LSL-clock time in seconds (``pylsl.local_clock()``)."""
    return float(pylsl.local_clock())
