"""The whole loop on one machine: a simulated rig process streaming over real LSL, the
hot path reading it back, policies, the safety envelope, a real MQTT broker, and the
rig process's simulated drivers acting on the rig."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from acquisition.config import AcquisitionConfig
from acquisition.pipeline import OnlinePipeline
from acquisition.sim.rig import SimulatedRig
from bci.config import BciConfig, validate
from bci.runtime import run_loop
from tests.helpers.sim_rig_process import sim_rig_process

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def base_config(rig: str, broker_url: str, policies: list[dict[str, Any]]) -> dict[str, Any]:
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    demo["rig"] = rig
    demo["mqtt"] = {"url": broker_url}
    demo["sim_rig"]["stream"]["name"] = f"Rig-{rig}"
    demo.pop("decoders")
    # generous freshness: these tests check what the loop decides, not how fast it is on
    # a loaded machine (benchmarks/closed_loop_latency.py measures that)
    demo["loop"] = {
        "source": {"kind": "sim_rig"},
        "sort": False,
        "policies": policies,
        "max_staleness_ms": 1000,
    }
    return demo


def build(data: dict[str, Any]) -> BciConfig:
    return validate(BciConfig, data, "test", base_dir=ROOT / "configs")


def detected_baseline_hz(config: BciConfig, seconds: float = 4.0) -> float:
    """The population's detected spike rate without stimulation, computed offline."""
    assert config.sim_rig is not None
    rig = SimulatedRig(config.sim_rig.model_copy(update={"pacing": "fast"}))
    OnlinePipeline.warm_up()
    pipe = OnlinePipeline(
        config.acquisition or AcquisitionConfig(), rig.electrode_xy, rig.sample_rate_hz, sort=False
    )
    n = 0
    warm = int(1.0 * rig.sample_rate_hz)  # let the noise estimate settle
    for k in range(int((seconds + 1.0) * 1000)):
        batch = pipe.process(rig.process(30).chunk)
        if k * 30 >= warm:
            n += len(batch)
    return n / seconds


@pytest.mark.parametrize("poll_ahead_ms", [0.0, 0.3], ids=["sleeping", "polling"])
def test_spike_triggered_one_stimulation_per_qualifying_spike(
    mqtt_broker: Any, unique_id: str, tmp_path: Path, poll_ahead_ms: float
) -> None:
    lockout_ms, deadline_ms = 100.0, 1000.0
    policy = {
        "kind": "spike_triggered",
        "device": "stim0",
        "electrodes": list(range(8, 24)),
        "lockout_ms": lockout_ms,
        "deadline_ms": deadline_ms,
        "command": {"kind": "electrical", "electrodes": [16], "amplitude_ua": 10},
    }
    data = base_config(f"st{unique_id}", mqtt_broker.url, [policy])
    data["loop"]["poll_ahead_ms"] = poll_ahead_ms
    config = build(data)
    rt, sup = asyncio.run(run_loop(config, 10.0, workdir=tmp_path, handle_signals=False))
    assert sup.incidents == []
    hot = rt.hot
    assert hot is not None
    # every sample went through, whether the thread slept or polled for it
    assert hot.stats.first_sample is not None
    assert hot.stats.samples == hot.stats.end_sample - hot.stats.first_sample
    st = hot.policies[0].status()
    # exactly one command per qualifying spike outside the lockout
    assert st["triggers"] >= 20, f"{hot.stats.stale_chunks} stale chunks of {hot.stats.chunks}"
    assert st["commands"] == st["triggers"]
    assert st["locked_out"] > 0
    traces = sorted(rt.tracer.traces(), key=lambda t: t.cause_sample)
    assert len(traces) == st["commands"]
    executed = [t for t in traces if t.status == "executed"]
    expired = [t for t in traces if t.status == "expired"]
    refused = [t for t in traces if t.status == "rejected_by_controller"]
    # every command got its final ack, or the envelope refused to send it. The envelope
    # checks pulse spacing in wall time: after a stall on a loaded machine the loop
    # catches up, and two spikes a lockout apart in the recording can reach it closer
    # than its 5 ms rate rule (seen once in CI: 2.7 ms). Refusing is the safe answer.
    assert len(executed) + len(expired) + len(refused) == len(traces)
    assert all(t.rule == "electrical.rate" for t in refused)
    assert len(executed) >= 0.9 * len(traces)
    for t in executed:  # within the deadline, and the rig says where it started
        assert t.executed is not None
        assert t.executed <= t.cause_time + deadline_ms / 1000.0
        assert t.start_sample is not None
        assert t.start_sample >= t.cause_sample
    # none during lockout: consecutive stimulated spikes are at least the lockout apart
    gaps = np.diff([t.cause_sample for t in traces]) / 30_000.0 * 1000.0
    assert gaps.min() >= lockout_ms


def test_rate_clamp_brings_population_to_setpoint_and_holds_it(
    mqtt_broker: Any, unique_id: str, tmp_path: Path
) -> None:
    data = base_config(f"rc{unique_id}", mqtt_broker.url, [])
    baseline = detected_baseline_hz(build(data))
    setpoint = 1.3 * baseline
    data["loop"]["policies"] = [
        {
            "kind": "rate_clamp",
            "device": "opto0",
            "setpoint_hz": setpoint,
            "period_ms": 100,
            "window_ms": 300,
            "kp": 0.002,
            "ki": 0.01,
            "actuator": "power_mw",
            "output_max": 8.0,
            "command": {
                "kind": "optical",
                "site": "led0",
                "power_mw": 1.0,
                "pulse_width_ms": 5,
                "frequency_hz": 50,
            },
        }
    ]
    rt, _ = asyncio.run(run_loop(build(data), 16.0, workdir=tmp_path, handle_signals=False))
    assert rt.hot is not None
    policy = rt.hot.policies[0]
    hist = np.array(policy.history)  # (end sample, rate Hz, output mW)
    assert hist.shape[0] > 100
    start = hist[0, 0]
    first = hist[hist[:, 0] < start + 0.5 * 30_000]
    held = hist[hist[:, 0] > start + 8 * 30_000]  # after 8 s, until the end
    assert first[:, 1].mean() < 0.9 * setpoint  # it started from baseline, below
    assert abs(held[:, 1].mean() - setpoint) <= 0.1 * setpoint
    assert held[:, 2].max() < 8.0  # control, not saturation
    assert rt.tracer.executed() > 50  # the light really went on, many times


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_everything_cleanly(mqtt_broker: Any, unique_id: str, tmp_path: Path) -> None:
    import pylsl

    rig = f"term{unique_id}"
    policy = {
        "kind": "spike_triggered",
        "device": "stim0",
        "electrodes": list(range(32)),
        "lockout_ms": 50,
        "command": {"kind": "electrical", "electrodes": [16], "amplitude_ua": 10},
    }
    cfg_path = tmp_path / "loop.yaml"
    cfg_path.write_text(yaml.safe_dump(base_config(rig, mqtt_broker.url, [policy])))
    report = tmp_path / "report"
    env = dict(os.environ, BCI_MQTT_URL=mqtt_broker.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bci", "run", str(cfg_path), "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # the rig is streaming once its stream resolves; then let the loop act a little
        found = pylsl.resolve_byprop("source_id", f"bci-{rig}-simrig", 1, 90.0)
        assert found, "the rig never came up"
        inlet = pylsl.StreamInlet(found[0])
        inlet.pull_chunk(timeout=3.0, max_samples=90_000)  # about 3 s of the run
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads((report / "summary.json").read_text())
    assert all(s["state"] == "stopped" for s in summary["services"].values()), summary["services"]
    rig_pid = summary["services"]["rig"]["pid"]
    assert not _alive(rig_pid)  # no process left behind
    # no output on: every device acknowledged the stop_all, and the drivers went safe
    assert summary["acks"].get("executed", 0) >= 2
    rig_log = (report / "sim-rig.log").read_text()
    assert "safe states" in rig_log
    for name in ("raster.png", "latency.png", "index.html"):
        assert (report / name).stat().st_size > 1000  # a complete session report
    # the stream is gone too
    deadline = time.monotonic() + 10
    while pylsl.resolve_byprop("source_id", f"bci-{rig}-simrig", 1, 0.5):
        assert time.monotonic() < deadline, "the rig's stream outlived the run"


def test_source_that_never_appears_stops_with_a_clear_message(
    unique_id: str, tmp_path: Path
) -> None:
    data = {
        "rig": f"nosrc{unique_id}",
        "acquisition": {"inlet": {"source_id": f"no-such-{unique_id}", "resolve_timeout_s": 0.2}},
        "loop": {
            "source": {"kind": "lsl"},
            "restart": {"max_restarts": 2, "backoff_min_s": 0.01, "backoff_max_s": 0.02},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "bci", "run", str(path), "--duration", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "service 'loop' failed 3 times" in proc.stderr
    assert f"no-such-{unique_id}" in proc.stderr


def test_same_config_runs_against_an_external_stream_by_changing_source_and_broker(
    mqtt_broker: Any, unique_id: str, tmp_path: Path
) -> None:
    """An external amplifier stand-in (``bci sim-rig`` started on its own, with its
    drivers) and a broker: only ``loop.source``, ``acquisition.inlet`` and ``mqtt``
    change from the demo config."""
    rig = f"ext{unique_id}"
    policy = {
        "kind": "spike_triggered",
        "device": "stim0",
        "electrodes": list(range(32)),
        "lockout_ms": 100,
        "deadline_ms": 1000,
        "command": {"kind": "electrical", "electrodes": [16], "amplitude_ua": 10},
    }
    data = base_config(rig, mqtt_broker.url, [policy])
    rig_path = tmp_path / "amplifier.yaml"
    rig_path.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "loop"}))
    with sim_rig_process(rig_path, mqtt_broker.url):
        data["loop"]["source"] = {"kind": "lsl"}
        data["acquisition"]["inlet"] = {"source_id": f"bci-{rig}-simrig"}
        rt, sup = asyncio.run(
            run_loop(build(data), 8.0, workdir=tmp_path / "work", handle_signals=False)
        )
    assert "rig" not in sup.health()  # nothing simulated in this process
    assert rt.hot is not None
    assert rt.hot.stats.spikes > 100
    assert rt.tracer.executed() >= 10  # the external drivers executed the loop's commands
