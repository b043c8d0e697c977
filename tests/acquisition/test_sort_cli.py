"""``bci sort``: a SpikeInterface binary folder in, a sorting spikeinterface.load reads out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

si = pytest.importorskip("spikeinterface.core")

from typer.testing import CliRunner  # noqa: E402

from bci.cli import app  # noqa: E402
from tests.acquisition.test_sort import FS, best_accuracy, toy_recording  # noqa: E402


@pytest.fixture(scope="module")
def binary_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    x, pos, truth = toy_recording(12.0, seed=5)
    rec = si.NumpyRecording([x], sampling_frequency=FS)
    rec.set_dummy_probe_from_locations(pos)
    folder = tmp_path_factory.mktemp("rec") / "binary"
    rec.save(folder=folder, format="binary")
    return folder, truth


def test_sort_writes_a_loadable_sorting(binary_folder, tmp_path: Path) -> None:
    folder, truth = binary_folder
    cfg = tmp_path / "sort.yaml"
    sorter = "    learning_s: 4.0\n    min_cluster_spikes: 10\n"  # a short learning period
    cfg.write_text("acquisition:\n  chunk_ms: 20\n  sorter:\n" + sorter)
    out = tmp_path / "sorting"
    result = CliRunner().invoke(
        app, ["sort", str(folder), "--out", str(out), "--config", str(cfg)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "units" in result.output
    sorting = si.load(out)
    assert isinstance(sorting, si.BaseSorting)
    assert sorting.get_sampling_frequency() == FS
    assert len(sorting.unit_ids) >= len(truth)
    summary = json.loads((out / "bci_sort.json").read_text())["summary"]
    assert summary["n_units"] == len(sorting.unit_ids)
    samples, labels = [], []
    for u in sorting.unit_ids:
        st = sorting.get_unit_spike_train(u)
        samples.append(st)
        labels.append(np.full(len(st), int(u)))
    s, lab = np.concatenate(samples), np.concatenate(labels)
    for gt in truth:
        acc, _ = best_accuracy(gt[gt > int(4.5 * FS)], s, lab)
        assert acc >= 0.8


def test_sort_warns_when_the_recording_ends_before_learning(binary_folder, tmp_path) -> None:
    """A recording no longer than the learning period labels nothing: said, not silent."""
    folder, _ = binary_folder  # 12 s
    cfg = tmp_path / "sort.yaml"
    cfg.write_text("acquisition:\n  chunk_ms: 50\n  sorter:\n    learning_s: 20.0\n")
    out = tmp_path / "sorting"
    result = CliRunner().invoke(
        app, ["sort", str(folder), "--out", str(out), "--config", str(cfg)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines at the console width
    assert "no longer than the sorter's learning period (20 s)" in said
    assert len(si.load(out).unit_ids) == 0


def test_sort_bad_inputs_exit_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["sort", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "recording not found" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("acquisition:\n  detection:\n    threshold: -1\n")
    res = runner.invoke(
        app, ["sort", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)]
    )
    assert res.exit_code == 2
    assert "acquisition.detection.threshold.threshold" in res.output or "threshold" in res.output
