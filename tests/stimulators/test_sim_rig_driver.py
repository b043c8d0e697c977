"""The simulated electrode driver against the real SimulatedRig (in process, no LSL)."""

from __future__ import annotations

from typing import Any

import numpy as np

from acquisition.sim.config import SimRigConfig
from acquisition.sim.rig import SimulatedRig
from stimulators.config import SimElectricalDriverConfig
from stimulators.drivers import SimElectricalDriver
from tests.stimulators.helpers import electrical, stimulation_config


def silent_rig() -> SimulatedRig:
    # silent neurons and no noise: the recording is the stimulation artifact alone
    cfg: dict[str, Any] = {
        "pacing": "fast",
        "probe": {"kind": "linear", "n_electrodes": 16},
        "populations": [
            {"name": "exc", "count": 5, "model": {"kind": "lif"}, "drive": {"mean": 0}}
        ],
        "noise": {"thermal_uv": 0, "pink_uv": 0},
    }
    return SimulatedRig(SimRigConfig.model_validate(cfg))


async def test_sim_driver_drives_the_rig_and_stops_it_in_the_safe_state() -> None:
    rig = silent_rig()
    stim = stimulation_config()
    driver = SimElectricalDriver(
        SimElectricalDriverConfig(device="stim0"),
        rig="rig0",
        device=stim.device("stim0"),
        stimulation=stim,
        sim_rig=rig,
    )
    driver.on_heartbeat(b'{"alive": true}')
    assert np.abs(rig.process(300).chunk.data).max() == 0.0
    cmd = electrical(electrodes=[3], amplitudes_ua=(20.0, 20.0), n_pulses=50)
    acks = await driver.process(cmd.model_dump_json().encode())
    assert acks[-1].status == "executed"
    assert acks[-1].start_sample == 300  # the first sample not yet simulated
    out = rig.process(3000).chunk.data
    assert int(np.argmax(np.abs(out).max(axis=0))) == 3  # artifact largest on electrode 3
    assert rig.stimulating
    driver.on_heartbeat(b'{"alive": false}')  # the controller's last will
    await driver.safe_event.wait()
    assert not rig.stimulating
    assert np.abs(rig.process(3000).chunk.data).max() == 0.0


async def test_rig_refusal_is_an_error_ack_and_the_driver_carries_on() -> None:
    rig = silent_rig()
    stim = stimulation_config()
    driver = SimElectricalDriver(
        SimElectricalDriverConfig(device="stim0"),
        rig="rig0",
        device=stim.device("stim0"),
        stimulation=stim,
        sim_rig=rig,
    )
    driver.on_heartbeat(b'{"alive": true}')
    # electrode 100 is in the envelope but the 16-contact probe has no such contact
    (accepted, ack) = await driver.process(electrical(electrodes=[100]).model_dump_json().encode())
    assert accepted.status == "accepted"
    assert (ack.status, ack.rule) == ("rejected", "driver.execution_failed")
    assert "SimulationError" in (ack.message or "")
    acks = await driver.process(electrical(electrodes=[2]).model_dump_json().encode())
    assert acks[-1].status == "executed"
