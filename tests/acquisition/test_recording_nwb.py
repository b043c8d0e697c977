"""NWB export: raw data, electrodes, units and stimulation events; nwbinspector clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from acquisition.recording.config import RecordingConfig
from acquisition.recording.recorder import SessionRecorder
from acquisition.recording.session import Session
from acquisition.recording.sources import NwbSource, open_source
from bci.cli import app
from bci.types import Chunk, empty_spikes

FS = 30_000.0


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """0.3 s, 8 channels, two segments, sorted spikes, stim commands and acks."""
    rng = np.random.default_rng(4)
    pos = np.column_stack([np.zeros(8), 20.0 * np.arange(8)])
    rec = SessionRecorder(
        tmp_path / "s", FS, 8, config=RecordingConfig(rotate_s=0.2), positions_um=pos
    ).start()
    for k in range(30):
        first = k * 300
        t = 500.0 + first / FS
        rec.write(Chunk((20 * rng.standard_normal((300, 8))).astype(np.float32), first, t, FS))
        sp = empty_spikes(2)
        sp["sample"] = first + np.array([50, 200])
        sp["time"] = t + np.array([50, 200]) / FS
        sp["unit"] = [k % 3, -1]
        sp["channel"] = [k % 8, 0]
        rec.write_spikes(sp)
        if k % 5 == 0:
            rec.write_event("stim_command", command_id=f"c{k}", sample=first + 60, device="e0")
            rec.write_event("stim_ack", command_id=f"c{k}", time=t + 0.003, status="executed")
    rec.close()
    return tmp_path / "s"


def test_export_passes_nwbinspector_and_replays(session: Path, tmp_path: Path) -> None:
    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO

    out = tmp_path / "s.nwb"
    result = CliRunner().invoke(
        app,
        [
            "export-nwb",
            str(session),
            "--out",
            str(out),
            "--species",
            "Mus musculus",
            "--location",
            "VISp",
            "--age",
            "P90D",
            "--experimenter",
            "Doe, Jane",
            "--institution",
            "Test Lab",
        ],
    )
    assert result.exit_code == 0, result.output
    messages = list(inspect_nwbfile(nwbfile_path=str(out)))
    serious = [
        m for m in messages if m.importance.value >= Importance.BEST_PRACTICE_VIOLATION.value
    ]
    assert not serious, [(m.importance.name, m.message) for m in serious]

    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert sorted(nwb.acquisition) == ["ElectricalSeries", "ElectricalSeries_seg1"]
        assert len(nwb.electrodes) == 8
        np.testing.assert_allclose(nwb.electrodes["rel_y"].data[:], 20.0 * np.arange(8))
        assert sorted(nwb.units.id[:]) == [0, 1, 2]
        assert len(nwb.units.get_unit_spike_times(0)) == 10
        stim = nwb.intervals["stimulation"]
        assert len(stim) == 12
        kinds = list(stim["kind"].data[:])
        assert kinds.count("stim_command") == 6
        assert stim["start_time"].data[0] == pytest.approx(60 / FS)
        second = nwb.acquisition["ElectricalSeries_seg1"]
        assert second.starting_time == pytest.approx(0.2)

    source = open_source(out)
    assert isinstance(source, NwbSource)
    try:
        s = Session(session)
        assert source.sample_rate == FS
        assert source.n_samples == 6000  # the first series
        np.testing.assert_allclose(source.read_all(), s.read(0), rtol=0, atol=1e-4)
        np.testing.assert_allclose(source.positions_um, s.positions_um)
        assert next(iter(source.chunks(100))).first_sample == 0
    finally:
        source.close()
    second_source = NwbSource(out, "ElectricalSeries_seg1")
    try:
        chunk = next(iter(second_source.chunks(100)))
        assert chunk.first_sample == 6000
        np.testing.assert_allclose(chunk.data, Session(session).read(1, 0, 100), atol=1e-4)
    finally:
        second_source.close()


def test_export_without_subject_details_has_no_errors(session: Path) -> None:
    from nwbinspector import Importance, inspect_nwbfile

    from acquisition.recording.nwb import export_nwb

    out = export_nwb(session)
    assert out == session.with_suffix(".nwb")
    messages = list(inspect_nwbfile(nwbfile_path=str(out)))
    assert not [m for m in messages if m.importance == Importance.CRITICAL]
    assert (
        not [m for m in messages if m.importance == Importance.ERROR]
        if hasattr(Importance, "ERROR")
        else True
    )
    with pytest.raises(Exception, match="exists"):
        export_nwb(session)
