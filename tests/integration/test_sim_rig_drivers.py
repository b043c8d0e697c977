"""Stimulation through a real broker changes what the simulated rig records.

``bci sim-rig`` runs as its own process with its simulated drivers; this test is the
controller: it publishes commands with our publisher and reads the rig's ground-truth
stream over LSL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
import yaml

from acquisition.sim.rig import SimulatedRig
from bci.clock import now
from bci.config import BciConfig, validate
from stimulators.commands import Cause, ElectricalPulseTrain, new_command_id
from stimulators.config import MqttConfig
from stimulators.mqtt import StimPublisher
from tests.helpers.sim_rig_process import sim_rig_process

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def config(rig: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    data["rig"] = rig
    for key in ("loop", "decoders", "acquisition"):
        data.pop(key)
    return data


def pull_ground_truth(inlet: pylsl.StreamInlet, until_sample: int, timeout_s: float) -> np.ndarray:
    rows: list[list[float]] = []
    deadline = now() + timeout_s
    while now() < deadline:
        chunk, _ = inlet.pull_chunk(timeout=0.2)
        rows.extend(chunk)
        if rows and rows[-1][1] >= until_sample:
            break
    return np.array(rows).reshape(-1, 2)


def test_command_to_the_simulated_driver_raises_firing_near_the_electrode(
    mqtt_broker: Any, unique_id: str, tmp_path: Path
) -> None:
    rig_id = f"drv{unique_id}"
    data = config(rig_id)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg: BciConfig = validate(BciConfig, data, "test", base_dir=ROOT / "configs")
    assert cfg.sim_rig is not None
    assert cfg.stimulation is not None
    stimulation = cfg.stimulation
    model = SimulatedRig(cfg.sim_rig)  # same seed: the same neurons at the same places
    xy = model.electrode_xy[16]
    dist = np.linalg.norm(model.neuron_xyz - np.array([xy[0], xy[1], 0.0]), axis=1)
    near = np.nonzero(dist < 60.0)[0]
    assert near.size >= 2

    with sim_rig_process(path, mqtt_broker.url) as proc:
        found = pylsl.resolve_byprop("source_id", f"bci-{rig_id}-simrig-gt", 1, 30.0)
        assert found
        gt = pylsl.StreamInlet(found[0])
        gt.open_stream(timeout=10.0)

        rate = 30_000
        early = pull_ground_truth(gt, int(2.5 * rate), 30.0)  # a baseline before stimulating

        async def stimulate() -> tuple[Any, np.ndarray]:
            # the controller stays connected for the whole train: when it leaves, the
            # drivers go to their safe state and stop the output (tested elsewhere)
            mqtt = MqttConfig(url=mqtt_broker.url)
            async with StimPublisher(mqtt, stimulation, rig_id) as pub:
                await pub.wait_connected()
                t = now()
                cmd = ElectricalPulseTrain(
                    command_id=new_command_id(),
                    rig=rig_id,
                    device="stim0",
                    cause=Cause(time=t, sample=0),
                    deadline=t + 5.0,
                    electrodes=[16],
                    amplitudes_ua=(15.0, 15.0),
                    widths_us=(200.0, 200.0),
                    n_pulses=100,
                    frequency_hz=50.0,  # 2 s of stimulation
                )
                pub.submit(cmd)
                async with asyncio.timeout(10.0):
                    ack = await pub.wait_ack(cmd.command_id, frozenset({"executed"}))
                assert ack.start_sample is not None
                until = ack.start_sample + 2 * rate
                late = await asyncio.to_thread(pull_ground_truth, gt, until, 20.0)
                return ack, late

        ack, late = asyncio.run(stimulate())
        assert ack.status == "executed"
        start = ack.start_sample
        rows = np.concatenate([early, late])
    err = proc.stderr_text  # type: ignore[attr-defined]
    assert proc.returncode == 0, err
    neuron, sample = rows[:, 0].astype(int), rows[:, 1].astype(int)
    is_near = np.isin(neuron, near)
    before = np.count_nonzero(is_near & (sample >= start - 2 * rate) & (sample < start))
    during = np.count_nonzero(is_near & (sample >= start) & (sample < start + 2 * rate))
    assert (sample < start - rate).any(), "the stream should cover time before the stimulus"
    assert during >= before + 50  # 100 pulses: most evoke a spike in a near neuron
    assert "executed 1" in err  # the driver's own summary on exit
