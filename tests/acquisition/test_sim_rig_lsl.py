"""The simulated rig over real LSL on loopback, read by a consumer in another process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acquisition.sim.config import SimRigConfig
from acquisition.sim.rig import SimulatedRig, warm_up
from acquisition.sim.streamer import RigStreamer
from bci.config import validate

CONSUMER = Path(__file__).parents[1] / "helpers" / "lsl_consumer.py"

pytestmark = pytest.mark.integration


def rig_config(source_id: str, pacing: str = "realtime") -> SimRigConfig:
    return validate(
        SimRigConfig,
        {
            "seed": 3,
            "pacing": pacing,
            "probe": {"kind": "linear", "n_electrodes": 32},
            "populations": [{"name": "a", "count": 20, "model": {"kind": "lif"}}],
            "stream": {"source_id": source_id, "counter_channel": True, "name": "TestRig"},
        },
        "test",
    )


def test_consumer_process_receives_every_sample_with_metadata(unique_id: str) -> None:
    source_id = f"test-{unique_id}"
    cfg = rig_config(source_id)
    warm_up(cfg)
    rig = SimulatedRig(cfg)
    streamer = RigStreamer(rig, "rigtest")
    n_samples = 45_000  # 1.5 s at 30 kHz
    consumer = subprocess.Popen(
        [sys.executable, str(CONSUMER), "--source-id", source_id, "--samples", str(n_samples)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        ready = json.loads(consumer.stdout.readline())
        assert ready == {"ready": True}
        assert streamer.raw is not None
        assert streamer.raw.wait_for_consumers(10.0)
        streamer.start(duration_s=n_samples / cfg.sample_rate_hz)
        out, _ = consumer.communicate(timeout=60)
    finally:
        streamer.stop()
        streamer.join(10)
        streamer.close()
        consumer.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["name"] == "TestRig"
    assert result["channels"] == 32
    assert result["rate"] == pytest.approx(30_000.0)
    assert result["format"] == 1  # cf_float32
    assert result["labels"] == [f"e{i}" for i in range(32)]
    assert result["units"] == ["microvolts"]
    assert result["y_um"] == pytest.approx([float(y) for y in rig.electrode_xy[:, 1]])
    # every sample, in order, none dropped or duplicated: counter steps are all exactly 1
    assert result["received"] == n_samples
    assert result["first_counter"] == 0
    assert result["counter_steps"] == [1]
    assert result["all_finite"]
    assert result["signal_std_uv"] > 5.0  # noise and spikes, not zeros
    assert result["stamp_step_s"] == pytest.approx(1 / 30_000.0, rel=1e-3)
    assert streamer.stats.samples == n_samples
