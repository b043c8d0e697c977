"""Numba kernels of the acquisition hot path: plain functions over arrays, no I/O.

Every kernel is compiled with ``cache=True, nogil=True``; :func:`warm_up` runs each
one on tiny inputs so that compilation never lands inside a running loop.
"""

from __future__ import annotations


def warm_up() -> None:
    """Compile (or load from cache) every kernel of the hot path."""
    from acquisition.kernels import detect, filter, sort

    filter.warm_up()
    detect.warm_up()
    sort.warm_up()
