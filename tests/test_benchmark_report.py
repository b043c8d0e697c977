"""The per-unit report of ``benchmarks/sorting_accuracy.py`` (``--per-unit``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "sorting_accuracy.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("sorting_accuracy", _PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_units_short_of_08_are_counted_by_band_and_by_cause() -> None:
    report = _benchmark().unit_report
    # (accuracy, recall, precision, snr) per ground-truth unit
    units = [
        (0.95, 0.96, 0.99, 9.0),  # sorted
        (0.00, 0.00, 0.00, 3.5),  # missing
        (0.60, 0.62, 0.97, 3.8),  # misses spikes
        (0.70, 0.95, 0.74, 3.2),  # takes others' spikes
        (0.55, 0.70, 0.75, 4.5),  # both
        (0.85, 0.88, 0.97, 4.2),  # sorted
    ]
    acc, rec, prec, snr = (np.array(c) for c in zip(*units, strict=True))
    rows = {r["band"]: r for r in report(acc, rec, prec, snr)}
    assert sum(r["units"] for r in rows.values()) == len(units)
    b34, b45, b8 = rows["3-4"], rows["4-5"], rows["8-inf"]
    assert (b34["units"], b34["acc08"], b34["missing"]) == (3, 0, 1)
    assert (b34["recall"], b34["precision"], b34["both"]) == (1, 1, 0)
    assert b34["median_recall"] == pytest.approx(np.median([0.62, 0.95]))
    assert (b45["units"], b45["acc08"], b45["both"]) == (2, 1, 1)
    assert (b8["units"], b8["acc08"]) == (1, 1)
    assert np.isnan(b8["median_recall"])  # none short of 0.8 there


def test_a_run_too_short_to_score_after_learning_is_refused(monkeypatch, capsys) -> None:
    """``--duration`` must leave ``MIN_SCORED_S`` after the learning period; otherwise
    the benchmark stops before generating anything, saying what to change."""
    bench = _benchmark()
    argv = ["sorting_accuracy.py", "--duration", "40", "--learning-s", "30", "--si-sorter", "none"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "leaves under 10 s to score after the learning period (30 s, scored from 31 s)" in err
