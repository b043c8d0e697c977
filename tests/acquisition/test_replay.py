"""Replay: readers of every input format, offline replay into stages, LSL replay."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
from typer.testing import CliRunner

from acquisition.config import AcquisitionConfig
from acquisition.pipeline import OnlinePipeline
from acquisition.recording.config import RecordingConfig
from acquisition.recording.recorder import RecordingError, SessionRecorder
from acquisition.recording.replay import replay_lsl, replay_offline, replay_outlet
from acquisition.recording.sources import SessionSource, XdfSource, open_source
from acquisition.sim.rig import SimulatedRig
from acquisition.sim.streamer import RigStreamer
from bci.cli import app
from bci.types import Chunk
from tests.helpers.record_rig import rig_config
from tests.helpers.xdf_writer import XdfStream, write_xdf

FS = 30_000.0


class Collect:
    """A stage that keeps what it is given and passes it on."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def process(self, chunk: Chunk) -> Chunk:
        self.chunks.append(chunk)
        return chunk


@pytest.fixture(scope="module")
def rig_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.5 s of the simulated rig, recorded (two segments)."""
    folder = tmp_path_factory.mktemp("replay") / "session"
    rig = SimulatedRig(rig_config(11))
    recorder = SessionRecorder.for_rig(rig, folder, RecordingConfig(rotate_s=0.3)).start()
    RigStreamer(rig, stream=False, on_chunk=recorder.write_rig_chunk).run(0.5)
    recorder.close()
    return folder


def test_session_replays_every_sample_with_absolute_indices(rig_session: Path) -> None:
    source = open_source(rig_session)
    assert isinstance(source, SessionSource)
    sink = Collect()
    stats = replay_offline(source, [sink], chunk_samples=1000)
    assert stats.samples == 15_000
    assert stats.outputs == stats.chunks
    firsts = [c.first_sample for c in sink.chunks]
    assert firsts[:10] == [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
    assert sink.chunks[9].n_samples == 1000  # 9000 + 1000 = the segment boundary
    assert np.array_equal(np.concatenate([c.data for c in sink.chunks]), source.read_all())
    dt = np.diff([c.timestamp for c in sink.chunks])
    np.testing.assert_allclose(dt[dt > 0], [c.n_samples / FS for c in sink.chunks[:-1]], atol=1e-9)


def test_offline_replay_through_the_online_pipeline_is_deterministic(
    rig_session: Path, tmp_path: Path
) -> None:
    source = open_source(rig_session)
    cfg = AcquisitionConfig.model_validate({"detection": {"noise_warmup_s": 0.1}})
    spikes: list[np.ndarray] = []

    def run() -> np.ndarray:
        pipe = OnlinePipeline(cfg, source.positions_um, source.sample_rate, sort=False)
        out: list[np.ndarray] = []
        replay_offline(
            source, [pipe], chunk_samples=30, on_output=lambda c, b: out.append(b.spikes)
        )
        return np.concatenate(out)

    spikes = [run(), run()]
    assert len(spikes[0]) > 0
    assert np.array_equal(spikes[0], spikes[1])
    # the CLI runs the same stages (and the sorter) and writes the spikes
    config = tmp_path / "c.yaml"
    config.write_text("acquisition:\n  chunk_ms: 1.0\n  detection:\n    noise_warmup_s: 0.1\n")
    out = tmp_path / "spikes.npy"
    result = CliRunner().invoke(
        app, ["replay", str(rig_session), "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cli_spikes = np.load(out)
    np.testing.assert_array_equal(cli_spikes["sample"], spikes[0]["sample"])


def test_spikeinterface_binary_folder_replays(tmp_path: Path) -> None:
    import probeinterface as pi
    import spikeinterface.core as sc

    rng = np.random.default_rng(1)
    traces = [rng.standard_normal((2000, 6)).astype(np.float32) for _ in range(2)]
    rec = sc.NumpyRecording(traces, FS)
    probe = pi.generate_linear_probe(6)
    probe.set_device_channel_indices(np.arange(6))
    rec.set_probe(probe)  # in place (SpikeInterface >= 0.105)
    rec.save(folder=tmp_path / "si", format="binary")
    source = open_source(tmp_path / "si")
    assert source.kind == "spikeinterface"
    chunks = list(source.chunks(700))
    assert [c.first_sample for c in chunks] == [0, 700, 1400, 2000, 2700, 3400]
    assert np.array_equal(np.concatenate([c.data for c in chunks]), np.concatenate(traces))
    np.testing.assert_allclose(source.positions_um, probe.contact_positions)


def xdf_streams(n: int = 6000) -> tuple[XdfStream, XdfStream, np.ndarray]:
    rng = np.random.default_rng(2)
    data = (50 * rng.standard_normal((n, 16))).astype(np.float32)
    times = 1000.0 + np.arange(n) / FS
    positions = np.column_stack([np.zeros(16), 25.0 * np.arange(16)])
    rig = XdfStream(
        "SimRig",
        "ExtracellularEphys",
        data,
        times,
        FS,
        source_id="bci-rig0-simrig",
        labels=[f"e{i}" for i in range(16)],
        positions=positions,
        clock_offsets=[(1000.0, 0.0), (1000.1, 0.0)],
    )
    acc = XdfStream(
        "Accelerometer",
        "Motion",
        rng.standard_normal((40, 3)).astype(np.float32),
        1000.0 + np.arange(40) / 200.0,
        200.0,
        clock_offsets=[(1000.0, 0.0), (1000.1, 0.0)],
    )
    return rig, acc, positions


def test_xdf_multichannel_stream_replays_correctly(tmp_path: Path) -> None:
    rig, acc, positions = xdf_streams()
    path = tmp_path / "labrecorder.xdf"
    write_xdf(path, [acc, rig])  # interleaved chunks, the rig stream second
    source = open_source(path)
    assert isinstance(source, XdfSource)
    assert source.n_channels == 16
    assert source.sample_rate == FS
    assert source.channel_ids == [f"e{i}" for i in range(16)]
    np.testing.assert_allclose(source.positions_um, positions)
    sink = Collect()
    stats = replay_offline(source, [sink], chunk_samples=30)
    assert stats.samples == 6000
    assert [c.first_sample for c in sink.chunks[:3]] == [0, 30, 60]
    assert np.array_equal(np.concatenate([c.data for c in sink.chunks]), rig.data)
    stamps = np.array([c.timestamp for c in sink.chunks])
    np.testing.assert_allclose(stamps, rig.times[::30], atol=1e-6)
    # another stream by name; an unknown one is a clear error
    assert open_source(path, stream="Accelerometer").n_channels == 3
    with pytest.raises(RecordingError, match="no regular-rate numeric stream"):
        open_source(path, stream="nothing")


@pytest.mark.integration
def test_lsl_replay_delivers_every_sample_paced(tmp_path: Path, unique_id: str) -> None:
    rig, _, _ = xdf_streams(n=15_000)  # 0.5 s
    path = tmp_path / "r.xdf"
    write_xdf(path, [rig])
    source = open_source(path)
    outlet = replay_outlet(source, source_id=f"replay-{unique_id}", chunk_samples=30)
    found = pylsl.resolve_byprop("source_id", f"replay-{unique_id}", 1, 10.0)
    assert found
    inlet = pylsl.StreamInlet(found[0], max_buflen=30)
    inlet.open_stream(10.0)
    assert outlet.wait_for_consumers(10.0)
    info = inlet.info(10.0)
    assert info.channel_count() == 16
    speed = 5.0
    result: dict[str, Any] = {}

    def stream() -> None:
        result["stats"] = replay_lsl(source, outlet, chunk_samples=30, speed=speed)

    thread = threading.Thread(target=stream)
    thread.start()
    got = np.zeros((15_000, 16), dtype=np.float32)
    stamps = np.zeros(15_000)
    buf = np.zeros((2048, 16), dtype=np.float32)
    n = 0
    deadline = pylsl.local_clock() + 20.0
    while n < 15_000 and pylsl.local_clock() < deadline:
        _, ts = inlet.pull_chunk(timeout=0.5, max_samples=2048, dest_obj=buf)
        k = min(len(ts), 15_000 - n)
        got[n : n + k] = buf[:k]
        stamps[n : n + k] = ts[:k]
        n += k
    thread.join(20.0)
    outlet.close()
    assert n == 15_000
    assert np.array_equal(got, rig.data)  # every sample, in order, none twice
    span = stamps[-1] - stamps[0]
    assert span == pytest.approx(15_000 / FS / speed, rel=0.02)
    stats = result["stats"]
    assert stats.samples == 15_000
    assert stats.wall_s == pytest.approx(15_000 / FS / speed, abs=0.05)


def test_replay_cli_lsl_mode_and_bad_input(rig_session: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("acquisition:\n  inlet:\n    source_id: replay-cli-test\n")
    runner = CliRunner()
    result = runner.invoke(
        app, ["replay", str(rig_session), "--config", str(config), "--mode", "lsl", "--speed", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "15000 samples sent" in result.output
    result = runner.invoke(app, ["replay", str(tmp_path / "nope"), "--config", str(config)])
    assert result.exit_code == 2
    assert "not found" in result.output
    result = runner.invoke(
        app, ["replay", str(rig_session), "--config", str(config), "--mode", "bogus"]
    )
    assert result.exit_code == 2
