"""The driver's command handling without a broker: acks, deadlines, duplicates, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acquisition.sim.stimulus import ElectricalStimulus, OpticalStimulus
from bci.clock import now
from stimulators.config import SimElectricalDriverConfig, SimOpticalDriverConfig
from stimulators.drivers import SimElectricalDriver, SimOpticalDriver
from stimulators.drivers.base import PROTOCOL_RULES, Execution
from stimulators.safety import RULES, SafetyEnvelope
from tests.stimulators.helpers import (
    RecordingDriver,
    electrical,
    make_driver,
    optical,
    stimulation_config,
    stop_all,
)

ALL_RULES = RULES | PROTOCOL_RULES


def alive(driver):  # type: ignore[no-untyped-def]
    driver.on_heartbeat(b'{"alive": true}')
    return driver


async def test_executed_ack_contents() -> None:
    driver = alive(make_driver())
    cmd = electrical(sent=now())
    acks = await driver.process(cmd.model_dump_json().encode())
    assert [a.status for a in acks] == ["accepted", "executed"]
    done = acks[-1]
    assert done.command_id == cmd.command_id
    assert (done.rig, done.device, done.driver) == ("rig0", "stim0", "recording:stim0")
    assert done.cause == cmd.cause
    assert done.sent == cmd.sent
    assert done.received <= done.executed_at <= done.time
    assert done.start_sample == 1
    assert len(driver.executed) == 1


async def test_duplicate_executes_once() -> None:
    driver = alive(make_driver())
    payload = electrical().model_dump_json().encode()
    first = await driver.process(payload)
    second = await driver.process(payload)
    assert first[-1].status == "executed"
    assert [a.status for a in second] == ["duplicate"]
    assert len(driver.executed) == 1


async def test_expired_on_arrival_is_never_executed() -> None:
    driver = alive(make_driver())
    acks = await driver.process(electrical(deadline=now() - 0.001).model_dump_json().encode())
    assert [a.status for a in acks] == ["expired"]
    assert driver.executed == []


async def test_expired_just_before_execution_is_never_executed() -> None:
    driver = alive(make_driver())
    cmd = electrical(deadline=now() - 1e-6)
    # it arrived in time (received before the deadline) but the deadline passed since
    acks = await driver.process(cmd.model_dump_json().encode(), received=cmd.deadline - 0.01)
    assert acks[-1].status == "expired"
    assert driver.executed == []


async def test_envelope_rejection_names_rule_and_values() -> None:
    driver = alive(make_driver())
    acks = await driver.process(electrical(amplitudes_ua=(45.0, 45.0)).model_dump_json().encode())
    (ack,) = acks
    assert ack.status == "rejected"
    assert ack.rule == "electrical.charge_per_phase"
    assert ack.values is not None
    assert ack.values["charge_nc"] == pytest.approx(4.5)
    assert ack.values["max_charge_nc"] == pytest.approx(4.0)
    assert driver.executed == []


async def test_no_controller_no_output() -> None:
    driver = make_driver()
    (ack,) = await driver.process(electrical().model_dump_json().encode())
    assert (ack.status, ack.rule) == ("rejected", "driver.no_controller")
    lenient = make_driver(require_controller=False)
    acks = await lenient.process(electrical().model_dump_json().encode())
    assert acks[-1].status == "executed"


async def test_last_will_goes_safe() -> None:
    driver = alive(make_driver())
    assert driver.controller_alive
    driver.on_heartbeat(b'{"alive": false}')
    await driver.safe_event.wait()
    assert driver.state == "safe"
    assert driver.stops
    (ack,) = await driver.process(electrical().model_dump_json().encode())
    assert ack.rule == "driver.no_controller"


async def test_stop_all_stops_output() -> None:
    driver = alive(make_driver())
    acks = await driver.process(stop_all().model_dump_json().encode())
    assert [a.status for a in acks] == ["accepted", "executed"]
    assert len(driver.stops) == 1


def _valid() -> dict:
    return json.loads(electrical().model_dump_json())


def _with(**fields: object) -> bytes:
    return json.dumps({**_valid(), **fields}).encode()


def malformed() -> dict[str, tuple[bytes, str]]:
    return {
        "not json": (b"stimulate electrode 3 please", "protocol.invalid_json"),
        "not utf-8": (b"\xff\xfe\x00{", "protocol.invalid_json"),
        "json array": (b"[1, 2, 3]", "protocol.not_object"),
        "no schema version": (
            json.dumps({k: v for k, v in _valid().items() if k != "schema_version"}).encode(),
            "protocol.schema_version",
        ),
        "wrong schema version": (_with(schema_version=2), "protocol.schema_version"),
        "NaN": (
            _with(frequency_hz=0.0).replace(b'"frequency_hz": 0.0', b'"frequency_hz": NaN'),
            "protocol.invalid_json",
        ),
        "infinity by overflow": (
            _with(frequency_hz=0.0).replace(b'"frequency_hz": 0.0', b'"frequency_hz": 1e999'),
            "protocol.invalid_command",
        ),
        "huge amplitude": (_with(amplitudes_ua=[1e300, 1e300]), "protocol.invalid_command"),
        "huge integer": (_with(n_pulses=10**30), "protocol.invalid_command"),
        "5000-digit integer": (
            _with(n_pulses=0).replace(b'"n_pulses": 0', b'"n_pulses": ' + b"9" * 5000),
            "protocol.invalid_json",
        ),
        "unknown electrode": (_with(electrodes=[999]), "electrode.unknown"),
        "negative width": (_with(widths_us=[-100.0, 100.0]), "protocol.invalid_command"),
        "unknown kind": (_with(kind="ultrasound"), "protocol.invalid_command"),
        "extra field": (_with(voltage=3.0), "protocol.invalid_command"),
        "bad command id": (_with(command_id="42"), "protocol.invalid_command"),
        "other device": (_with(device="stim9"), "protocol.wrong_target"),
        "deep nesting": (b"[" * 30_000 + b"]" * 30_000, "protocol.invalid_json"),
        "10 MB": (_with(pad="x" * 10_000_000), "protocol.too_large"),
        "deadline in an hour": (_with(deadline=now() + 3600.0), "protocol.deadline_too_far"),
    }


async def test_malformed_payloads_are_rejected_and_driver_keeps_running() -> None:
    driver = alive(make_driver())
    cases = malformed()
    for name, (payload, rule) in cases.items():
        acks = await driver.process(payload)
        assert [a.status for a in acks] == ["rejected"], name
        assert acks[0].rule == rule, (name, acks[0].message)
        assert acks[0].rule in ALL_RULES
        json.loads(acks[0].model_dump_json())  # the ack itself is valid JSON
        good = await driver.process(electrical().model_dump_json().encode())
        assert good[-1].status == "executed", name
        driver.envelope = SafetyEnvelope(driver.device)  # let the next one through at once
    assert len(driver.executed) == len(cases)


async def test_error_ack_keeps_the_command_id_when_it_can() -> None:
    driver = alive(make_driver())
    cid = uuid.uuid4()
    (ack,) = await driver.process(_with(command_id=str(cid), schema_version=7))
    assert ack.command_id == cid
    (ack,) = await driver.process(b"nonsense")
    assert ack.command_id is None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amplitude=st.floats(0, 200, allow_nan=False),
    width=st.floats(-50, 2000),
    n_pulses=st.integers(-2, 400),
    frequency=st.floats(-10, 1000, allow_nan=False),
    electrode=st.integers(-1, 9),
    imbalance=st.floats(0.9, 1.1),
)
def test_property_driver_never_executes_a_breaking_command(
    amplitude: float,
    width: float,
    n_pulses: int,
    frequency: float,
    electrode: int,
    imbalance: float,
) -> None:
    payload = _with(
        electrodes=[electrode],
        amplitudes_ua=[amplitude, amplitude * imbalance],
        widths_us=[width, width],
        n_pulses=n_pulses,
        frequency_hz=frequency,
    )

    async def run() -> list:
        driver = alive(make_driver())
        return await driver.process(payload)

    acks = asyncio.run(run())
    if acks[-1].status == "executed":
        q1, q2 = amplitude * width / 1000, amplitude * imbalance * width / 1000
        assert 0 <= electrode <= 7
        assert amplitude * max(1, imbalance) <= 50
        assert 50 <= width <= 500
        assert 0 < frequency <= 200
        assert n_pulses >= 1
        assert max(q1, q2) <= 4.0 + 1e-9
        assert max(q1, q2) == 0 or abs(q1 - q2) / max(q1, q2) <= 0.01 + 1e-9
    else:
        assert acks[-1].status == "rejected"
        assert acks[-1].rule in ALL_RULES


class FakeRig:
    """Stands in for acquisition.sim.rig.SimulatedRig: records stimuli."""

    def __init__(self) -> None:
        self.stimuli: list[ElectricalStimulus | OpticalStimulus] = []
        self.stops = 0

    def stimulate(self, stimulus: ElectricalStimulus | OpticalStimulus) -> int:
        self.stimuli.append(stimulus)
        return 30_000 + len(self.stimuli)

    def stop_stimulation(self) -> None:
        self.stops += 1


async def test_sim_electrical_driver_applies_commands_to_the_rig() -> None:
    stim = stimulation_config()
    rig = FakeRig()
    driver = SimElectricalDriver(
        SimElectricalDriverConfig(device="stim0"),
        rig="rig0",
        device=stim.device("stim0"),
        stimulation=stim,
        sim_rig=rig,
    )
    alive(driver)
    cmd = electrical(
        electrodes=[2, 3], amplitudes_ua=(20.0, 20.0), widths_us=(150.0, 150.0), n_pulses=3
    )
    acks = await driver.process(cmd.model_dump_json().encode())
    assert acks[-1].status == "executed"
    assert acks[-1].start_sample == 30_001
    (s,) = rig.stimuli
    assert s == ElectricalStimulus(
        electrodes=(2, 3),
        amplitudes_ua=(20.0, 20.0),
        widths_us=(150.0, 150.0),
        interphase_gap_us=0.0,
        cathodic_first=True,
        n_pulses=3,
        frequency_hz=100.0,
    )
    (ack,) = await driver.process(optical(device="stim0").model_dump_json().encode())
    assert ack.rule == "device.kind"
    driver.on_heartbeat(b'{"alive": false}')
    await driver.safe_event.wait()
    assert rig.stops == 1


async def test_sim_optical_driver_applies_commands_to_the_rig() -> None:
    stim = stimulation_config()
    rig = FakeRig()
    driver = SimOpticalDriver(
        SimOpticalDriverConfig(device="opto0"),
        rig="rig0",
        device=stim.device("opto0"),
        stimulation=stim,
        sim_rig=rig,
    )
    alive(driver)
    acks = await driver.process(optical(duration_ms=100.0).model_dump_json().encode())
    assert acks[-1].status == "executed"
    (s,) = rig.stimuli
    assert s == OpticalStimulus(
        site="fiber0", power_mw=5.0, pulse_width_ms=5.0, n_pulses=2, frequency_hz=20.0
    )


async def test_hung_hardware_is_an_error_ack_with_output_stopped() -> None:
    class Hung(RecordingDriver):
        hardware_timeout_s = 0.05

        async def execute(self, command: Any) -> Execution:
            await asyncio.Event().wait()  # never returns
            raise AssertionError

    base = make_driver()
    driver = Hung(
        base.spec, rig="rig0", device=base.device, stimulation=base.stimulation, mqtt=None
    )
    alive(driver)
    acks = await driver.process(electrical().model_dump_json().encode())
    assert (acks[-1].status, acks[-1].rule) == ("rejected", "driver.execution_failed")
    assert "TimeoutError" in (acks[-1].message or "")
    assert driver.stops  # the output was stopped
