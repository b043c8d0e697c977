"""Online spike sorters: a registry of methods, one file each.

A sorter is a stage: ``process(detections) -> unit ids`` and ``reset()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from acquisition.config import TemplateSorterConfig
from acquisition.sorting.template import OnlineTemplateSorter
from bci.errors import UnknownKindError

__all__ = ["SORTERS", "OnlineTemplateSorter", "make_sorter"]

#: kind -> constructor ``(config, positions_um, neighbours, n_window, sample_rate, ...)``.
SORTERS: dict[str, Callable[..., Any]] = {"template": OnlineTemplateSorter}


def make_sorter(
    config: TemplateSorterConfig,
    positions_um: np.ndarray,
    neighbours: np.ndarray,
    n_window: int,
    sample_rate: float,
    *,
    background: bool = False,
    peak_row: int | None = None,
) -> OnlineTemplateSorter:
    """Build the sorter ``config.kind`` names."""
    try:
        cls = SORTERS[config.kind]
    except KeyError as exc:
        raise UnknownKindError(f"unknown sorter kind {config.kind!r}", kind=config.kind) from exc
    sorter: OnlineTemplateSorter = cls(
        config,
        positions_um,
        neighbours,
        n_window,
        sample_rate,
        background=background,
        peak_row=peak_row,
    )
    return sorter
