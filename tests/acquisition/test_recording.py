"""The session recorder: layout, checksums, torn tails, rotation, drops, disk full."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from acquisition.recording import layout
from acquisition.recording.config import RecordingConfig
from acquisition.recording.recorder import SessionRecorder
from acquisition.recording.session import Session, open_session
from acquisition.sim.rig import SimulatedRig
from acquisition.sim.streamer import RigStreamer
from bci.cli import app
from bci.config import BciConfig, validate
from bci.errors import ConfigError
from bci.types import Chunk, empty_spikes
from tests.helpers.record_rig import rig_config

FS = 30_000.0
MB = 1024 * 1024


def synthetic(n_chunks: int, n: int = 300, n_ch: int = 8, seed: int = 0) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    return [
        Chunk(rng.standard_normal((n, n_ch)).astype(np.float32), k * n, 10.0 + k * n / FS, FS)
        for k in range(n_chunks)
    ]


def record(folder: Path, chunks: list[Chunk], **cfg: Any) -> SessionRecorder:
    n_ch = chunks[0].n_channels
    pos = np.column_stack([np.zeros(n_ch), 20.0 * np.arange(n_ch)])
    rec = SessionRecorder(
        folder, FS, n_ch, config=RecordingConfig(**cfg), positions_um=pos, rig="test"
    )
    with rec:
        for c in chunks:
            rec.write(c)
    return rec


def test_rig_recording_is_exact_and_spikeinterface_reads_it(tmp_path: Path) -> None:
    import spikeinterface.core as sc

    cfg = rig_config(7)
    rig = SimulatedRig(cfg)
    recorder = SessionRecorder.for_rig(rig, tmp_path / "s", RecordingConfig(rotate_s=0.1)).start()
    RigStreamer(rig, stream=False, on_chunk=recorder.write_rig_chunk).run(0.25)
    stats = recorder.close()
    assert stats.samples_written == 7500
    assert stats.dropped == 0
    assert stats.segments == 3  # rotation every 0.1 s of data

    again = SimulatedRig(cfg)
    outs = [again.process(cfg.chunk_samples) for _ in range(250)]
    ref = np.concatenate([o.chunk.data for o in outs])
    session = Session(tmp_path / "s", verify="all")
    assert session.state == "closed"
    assert not session.problems
    assert np.array_equal(session.read_all(), ref)
    assert np.array_equal(session.ground_truth(), np.concatenate([o.ground_truth for o in outs]))
    assert session.code_version
    assert session.code_version != "unknown"
    assert session.config is not None
    assert session.config["sim_rig"]["seed"] == 7
    assert (tmp_path / "s" / layout.CONFIG_YAML).exists()
    assert session.checkpoint_dir.is_dir()

    rec = sc.load(tmp_path / "s")  # no conversion
    assert rec.get_num_segments() == 3
    assert [rec.get_num_samples(k) for k in range(3)] == [3000, 3000, 1500]
    assert rec.get_times(1)[0] == pytest.approx(0.1)  # t_start = first_sample / rate
    assert np.array_equal(rec.get_traces(segment_index=2), ref[6000:])
    np.testing.assert_allclose(rec.get_channel_locations(), rig.electrode_xy)
    assert list(rec.get_channel_ids()) == rig.channel_labels

    # chunks carry absolute sample indices and LSL times from the index
    chunks = list(session.chunks(1000))
    assert [c.first_sample for c in chunks[:4]] == [0, 1000, 2000, 3000]
    assert chunks[3].timestamp == pytest.approx(rig.origin + 0.1)


def test_torn_tail_is_reported_never_read_and_repair_makes_si_agree(tmp_path: Path) -> None:
    import spikeinterface.core as sc

    chunks = synthetic(10)
    record(tmp_path / "s", chunks, flush_interval_ms=10)  # 300 samples per block
    folder = tmp_path / "s"
    ref = np.concatenate([c.data for c in chunks])
    seg = folder / layout.segment_name(0)
    index = folder / layout.segment_index_name(0)
    # a crash mid-flush: half a block written, its index line torn
    with open(seg, "ab") as f:
        f.write(np.ones((150, 8), dtype=np.float32).tobytes()[:-7])
    with open(index, "ab") as f:
        f.write(b'{"offset":96000,"nbytes":')
    session = Session(folder)
    assert session.n_samples == 3000
    assert any("torn last index line" in p for p in session.problems)
    assert any("unverified tail" in p for p in session.problems)
    assert np.array_equal(session.read_all(), ref)

    result = CliRunner().invoke(app, ["session", str(folder)])
    assert result.exit_code == 1, result.output
    result = CliRunner().invoke(app, ["session", str(folder), "--repair"])
    assert result.exit_code == 0, result.output
    assert seg.stat().st_size == ref.nbytes
    rec = sc.load(folder)
    assert np.array_equal(rec.get_traces(), ref)


def test_checksum_mismatch_cuts_the_data_at_the_bad_block(tmp_path: Path) -> None:
    chunks = synthetic(6)
    record(tmp_path / "s", chunks, flush_interval_ms=10)
    seg = tmp_path / "s" / layout.segment_name(0)
    raw = bytearray(seg.read_bytes())
    raw[3 * 300 * 32 + 5] ^= 0xFF  # a flipped bit in block 3
    seg.write_bytes(bytes(raw))
    assert Session(tmp_path / "s", verify="tail").n_samples == 1800  # only the last is checked
    session = Session(tmp_path / "s", verify="all")
    assert session.n_samples == 900
    assert any("checksum mismatch in block 3" in p for p in session.problems)


def test_gap_in_the_input_starts_a_new_segment(tmp_path: Path) -> None:
    chunks = synthetic(4)
    moved = Chunk(chunks[3].data, 5000, chunks[3].timestamp + 1.0, FS)
    rec = record(tmp_path / "s", [*chunks[:3], moved])
    session = Session(tmp_path / "s")
    assert [(s.first_sample, s.n_samples) for s in session.segments] == [(0, 900), (5000, 300)]
    gap = session.events("gap")
    assert gap
    assert gap[0]["missing_samples"] == 4100
    assert rec.stats.segments == 2


def test_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    release = threading.Event()

    def stalled_disk(path: Path) -> int:
        release.wait(10)  # the writer thread is stuck in I/O
        return 100 * 1024 * MB

    chunks = synthetic(40, n=300)
    rec = SessionRecorder(
        tmp_path / "s",
        FS,
        8,
        config=RecordingConfig(queue_s=0.1, flush_interval_ms=10),
        disk_usage=lambda p: 100 * 1024 * MB,
    ).start()
    rec._disk_usage = stalled_disk  # stall the writer from now on
    rec.write(chunks[0])  # 300 samples: the writer takes them and blocks in its flush
    for c in chunks[1:]:
        rec.write(c)  # returns at once; the queue holds 0.1 s = 3000 samples
    assert rec.stats.dropped_chunks > 0
    assert rec.stats.dropped_samples == 300 * rec.stats.dropped_chunks
    release.set()
    stats = rec.close()
    assert stats.samples_written + stats.dropped_samples == 40 * 300
    session = Session(tmp_path / "s")
    assert session.n_samples == stats.samples_written
    drops = session.events("recorder_drop")
    assert drops  # the drop is in the session, not only in a counter
    ref = np.concatenate([c.data for c in chunks])
    for seg in session.segments:  # what was kept is whole and in its place
        assert np.array_equal(session.read(seg.k), ref[seg.first_sample : seg.end_sample])
    assert (
        json.loads((tmp_path / "s" / layout.SESSION_JSON).read_text())["stats"]["dropped_chunks"]
        == stats.dropped_chunks
    )


def test_disk_nearly_full_warns_then_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def disk(path: Path) -> int:
        # the disk fills ten times faster than the session grows
        used = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
        return 60 * MB - 10 * used

    chunks = synthetic(30, n=3000, n_ch=32)  # 384 KB each, one flush each
    cfg = RecordingConfig(flush_interval_ms=100, warn_free_mb=50, stop_free_mb=40, queue_s=10)
    rec = SessionRecorder(tmp_path / "s", FS, 32, config=cfg, disk_usage=disk).start()
    with caplog.at_level(logging.WARNING, logger="acquisition.recording.recorder"):
        for c in chunks:
            rec.write(c)
        stats = rec.close()
    assert any("disk space low" in r.message for r in caplog.records)
    assert any("disk nearly full" in r.message for r in caplog.records)
    session = Session(tmp_path / "s", verify="all")
    assert session.state == "stopped"
    assert "disk nearly full" in session.meta["stop_reason"]
    assert not session.problems  # what was written is whole
    ref = np.concatenate([c.data for c in chunks])
    # each 3000-sample block (384 KB) takes 3.84 MB of the free space: blocks 1-6 fit
    # above 40 MB (the warning comes at block 4, below 50 MB), block 7 would not
    assert session.n_samples == 6 * 3000
    assert np.array_equal(session.read_all(), ref[: session.n_samples])
    assert stats.samples_written + stats.dropped_samples == len(ref)
    assert session.events("disk_low")


def test_not_enough_space_to_start_is_an_error(tmp_path: Path) -> None:
    from acquisition.recording.recorder import RecordingError

    rec = SessionRecorder(
        tmp_path / "s", FS, 4, config=RecordingConfig(), disk_usage=lambda p: 10 * MB
    )
    with pytest.raises(RecordingError, match="not enough free disk space"):
        rec.start()


def test_spikes_events_and_sorting(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path / "s", FS, 8).start()
    for c in synthetic(5):
        rec.write(c)
        sp = empty_spikes(3)
        sp["sample"] = c.first_sample + np.array([10, 100, 200])
        sp["unit"] = [0, 1, -1]
        sp["channel"] = [1, 2, 3]
        rec.write_spikes(sp)
        rec.write_event("stim_command", command_id=f"c{c.first_sample}", sample=c.first_sample)
        rec.write_event("stim_ack", {"command_id": f"c{c.first_sample}", "ok": True})
    rec.close()
    session = Session(tmp_path / "s")
    assert len(session.spikes()) == 15
    assert [e["command_id"] for e in session.events("stim_ack")][:2] == ["c0", "c300"]
    assert all("time" in e for e in session.events())
    sorting = session.sorting()
    assert list(sorting.get_unit_ids()) == [0, 1]
    assert len(sorting.get_unit_spike_train(0)) == 5
    result = CliRunner().invoke(
        app, ["session", str(tmp_path / "s"), "--sorting-out", str(tmp_path / "sorting")]
    )
    assert result.exit_code == 0, result.output
    import spikeinterface.core as sc

    assert len(sc.load(tmp_path / "sorting").get_unit_ids()) == 2


def test_recording_section_in_a_config(tmp_path: Path) -> None:
    cfg = validate(
        BciConfig, {"recording": {"folder": "data", "rotate_s": 3600}}, "x", base_dir=tmp_path
    )
    assert cfg.recording is not None
    assert cfg.recording.folder == tmp_path / "data"
    assert cfg.recording.flush_interval_ms == 100
    with pytest.raises(ConfigError, match="stop_free_mb"):
        validate(BciConfig, {"recording": {"warn_free_mb": 10, "stop_free_mb": 20}}, "x")
    with pytest.raises(ConfigError, match="flush_interval_ms"):
        validate(BciConfig, {"recording": {"flush_interval_ms": 0}}, "x")


def test_recorder_for_a_whole_config(tmp_path: Path) -> None:
    cfg = validate(BciConfig, {"rig": "bench1", "recording": {"folder": "data"}}, "x", tmp_path)
    rec = SessionRecorder.for_config(cfg, FS, 8).start()
    rec.write(synthetic(1)[0])
    rec.close()
    assert rec.folder.parent == tmp_path / "data"
    assert rec.folder.name.startswith("bench1-")
    session = Session(rec.folder)
    assert session.config is not None
    assert session.config["rig"] == "bench1"
    assert session.meta["rig"] == "bench1"
    assert session.n_samples == 300


def test_a_folder_holding_a_session_is_refused(tmp_path: Path) -> None:
    from acquisition.recording.recorder import RecordingError

    record(tmp_path / "s", synthetic(1))
    with pytest.raises(RecordingError, match="already holds a session"):
        SessionRecorder(tmp_path / "s", FS, 8).start()
    with pytest.raises(RecordingError, match="not a session"):
        open_session(tmp_path)
