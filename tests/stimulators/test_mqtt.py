"""Stimulation over a real MQTT broker (a private Mosquitto per test).

Controller (publisher) and driver talk through the broker: acks, duplicates, deadlines,
malformed payloads, mosquitto_pub interoperability, a killed or frozen controller, and
a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bci.clock import now
from stimulators.commands import Ack
from stimulators.config import parse_mqtt_url
from stimulators.drivers.base import Driver
from stimulators.mqtt import StimPublisher, Topics, stop_task
from tests.stimulators.helpers import (
    RecordingDriver,
    electrical,
    make_driver,
    mqtt_config,
    stimulation_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]


class AckLog:
    """Every ack the controller hears, with a way to wait for one."""

    def __init__(self) -> None:
        self.acks: list[Ack] = []
        self._event = asyncio.Event()

    def __call__(self, ack: Ack) -> None:
        self.acks.append(ack)
        self._event.set()

    async def wait_for(self, predicate: Callable[[list[Ack]], bool]) -> None:
        while not predicate(self.acks):
            self._event.clear()
            await self._event.wait()


@contextlib.asynccontextmanager
async def running(driver: Driver) -> AsyncIterator[Driver]:
    task = asyncio.create_task(driver.run())
    try:
        async with asyncio.timeout(10):
            await driver.connected.wait()
        yield driver
    finally:
        await stop_task(task)


@contextlib.asynccontextmanager
async def loop_setup(
    broker: Any, rig: str
) -> AsyncIterator[tuple[StimPublisher, RecordingDriver, AckLog]]:
    stim = stimulation_config()
    log = AckLog()
    driver = make_driver(stim, mqtt_url=broker.url, rig=rig)
    async with (
        running(driver),
        StimPublisher(mqtt_config(broker.url), stim, rig, on_ack=log) as pub,
    ):
        async with asyncio.timeout(10):
            await pub.wait_connected()
            await driver.alive_event.wait()
        yield pub, driver, log


async def raw_publish(url: str, topic: str, *payloads: bytes) -> None:
    b = parse_mqtt_url(url)
    async with aiomqtt.Client(b.host, b.port) as client:
        for p in payloads:
            await client.publish(topic, p, qos=1)


def executed_ids(driver: RecordingDriver) -> list:
    return [c.command_id for _, c in driver.executed]


async def test_ack_contents(mqtt_broker: Any, rig_name: str) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, _log):
        cmd = electrical(rig=rig_name, deadline=now() + 2.0)
        pub.submit(cmd)
        async with asyncio.timeout(5):
            ack = await pub.wait_ack(cmd.command_id)
        assert ack.status == "executed"
        statuses = [a.status for a in pub.acks_for(cmd.command_id)]
        assert statuses[0] == "accepted"
        assert ack.command_id == cmd.command_id
        assert (ack.rig, ack.device) == (rig_name, "stim0")
        assert ack.cause == cmd.cause
        assert ack.sent is not None
        assert ack.sent <= ack.received <= ack.executed_at <= ack.time <= cmd.deadline
        assert executed_ids(driver) == [cmd.command_id]
        assert pub.stats.published == 1


async def test_unsafe_command_is_rejected_by_the_controller_too(
    mqtt_broker: Any, rig_name: str
) -> None:
    from bci.errors import SafetyViolation

    async with loop_setup(mqtt_broker, rig_name) as (pub, _driver, _):
        with pytest.raises(SafetyViolation) as err:
            pub.submit(electrical(rig=rig_name, amplitudes_ua=(80.0, 80.0)))
        assert err.value.rule == "electrical.amplitude"
        assert pub.queued == 0
        assert pub.stats.rejected == 1


async def test_duplicate_redelivery_executes_once(mqtt_broker: Any, rig_name: str) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (_pub, driver, log):
        cmd = electrical(rig=rig_name)
        payload = cmd.model_dump_json().encode()
        await raw_publish(mqtt_broker.url, Topics(rig_name).cmd("stim0"), payload, payload, payload)
        async with asyncio.timeout(5):
            await log.wait_for(
                lambda acks: (
                    sum(a.status == "duplicate" for a in acks) == 2
                    and any(a.status == "executed" for a in acks)
                )
            )
        assert executed_ids(driver) == [cmd.command_id]
        assert driver.stats.duplicate == 2


async def test_expired_command_is_never_executed(mqtt_broker: Any, rig_name: str) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, _log):
        stale = electrical(rig=rig_name, deadline=now() - 0.01)
        await raw_publish(
            mqtt_broker.url, Topics(rig_name).cmd("stim0"), stale.model_dump_json().encode()
        )
        async with asyncio.timeout(5):
            ack = await pub.wait_ack(stale.command_id)
        assert ack.status == "expired"
        # the controller does not even send a command that expired in its queue
        pub.submit(electrical(rig=rig_name, deadline=now() + 1e-4))
        late = electrical(rig=rig_name, electrodes=[2], deadline=now() + 2.0)
        pub.submit(late)
        async with asyncio.timeout(5):
            await pub.wait_ack(late.command_id)
        assert executed_ids(driver) == [late.command_id]
        assert pub.stats.dropped_expired + driver.stats.expired == 2


async def test_malformed_payloads_over_the_broker(mqtt_broker: Any, rig_name: str) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, log):
        good = json.loads(electrical(rig=rig_name).model_dump_json())
        bad = [
            b"not json at all",
            json.dumps({**good, "schema_version": 99}).encode(),
            json.dumps({**good, "frequency_hz": 1.0}).replace("1.0", "NaN").encode(),
            json.dumps({**good, "amplitudes_ua": [1e308, 1e308]}).encode(),
            json.dumps({**good, "electrodes": [4242]}).encode(),
            json.dumps({**good, "widths_us": [-5, 100]}).encode(),
            json.dumps({**good, "pad": "x" * (10 * 1024 * 1024)}).encode(),
        ]
        await raw_publish(mqtt_broker.url, Topics(rig_name).cmd("stim0"), *bad)
        async with asyncio.timeout(10):
            await log.wait_for(lambda acks: sum(a.status == "rejected" for a in acks) == len(bad))
        rules = [a.rule for a in log.acks if a.status == "rejected"]
        assert rules == [
            "protocol.invalid_json",
            "protocol.schema_version",
            "protocol.invalid_json",
            "protocol.invalid_command",
            "electrode.unknown",
            "protocol.invalid_command",
            "protocol.too_large",
        ]
        after = electrical(rig=rig_name)
        pub.submit(after)
        async with asyncio.timeout(5):
            assert (await pub.wait_ack(after.command_id)).status == "executed"
        assert executed_ids(driver) == [after.command_id]


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub not installed")
async def test_mosquitto_pub_is_treated_like_our_publisher(
    mqtt_broker: Any, rig_name: str, tmp_path: Path
) -> None:
    b = parse_mqtt_url(mqtt_broker.url)
    topic = Topics(rig_name).cmd("stim0")
    async with loop_setup(mqtt_broker, rig_name) as (pub, _driver, _log):
        cases = [
            {"electrodes": [3]},
            {"electrodes": [4], "amplitudes_ua": (45.0, 45.0)},  # breaks the 4 nC cap
            {"electrodes": [5], "deadline": now() - 1.0},  # already expired
        ]
        ours, theirs = [], []
        for fields in cases:
            # the controller would refuse the unsafe one: publish it raw for comparison
            a = electrical(rig=rig_name, **fields)
            await raw_publish(mqtt_broker.url, topic, a.model_dump_json().encode())
            ours.append(a)
        for i, fields in enumerate(cases):
            fields = {**fields, "electrodes": [fields["electrodes"][0] + 3]}
            c = electrical(rig=rig_name, **fields)
            path = tmp_path / f"cmd{i}.json"
            path.write_text(c.model_dump_json())
            proc = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", b.host, "-p", str(b.port), "-t", topic, "-q", "1",
                "-f", str(path),
            )  # fmt: skip
            async with asyncio.timeout(10):
                assert await proc.wait() == 0
            theirs.append(c)
        async with asyncio.timeout(10):
            for c in ours + theirs:
                await pub.wait_ack(c.command_id)
        for a, c in zip(ours, theirs, strict=True):
            ack_a, ack_c = pub.acks_for(a.command_id)[-1], pub.acks_for(c.command_id)[-1]
            assert (ack_a.status, ack_a.rule) == (ack_c.status, ack_c.rule)
        assert [pub.acks_for(c.command_id)[-1].status for c in theirs] == [
            "executed",
            "rejected",
            "expired",
        ]


CONTROLLER = textwrap.dedent(
    """
    import asyncio, sys
    from stimulators.mqtt import StimPublisher
    from tests.stimulators.helpers import mqtt_config, stimulation_config

    async def main():
        async with StimPublisher(mqtt_config(sys.argv[1]), stimulation_config(), sys.argv[2]) as p:
            await p.wait_connected()
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@contextlib.asynccontextmanager
async def controller_process(url: str, rig: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONTROLLER,
        url,
        rig,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).strip() == b"ready"
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@pytest.mark.parametrize("how", ["kill", "freeze"])
async def test_losing_the_controller_puts_the_driver_in_its_safe_state(
    mqtt_broker: Any, rig_name: str, how: str
) -> None:
    """SIGKILL: the broker sends the controller's last will. SIGSTOP: the process is
    frozen with its connection open, so only the missing heartbeat can tell."""
    stim = stimulation_config()
    driver = make_driver(stim, mqtt_url=mqtt_broker.url, rig=rig_name)
    timeout_s = stim.heartbeat_timeout_ms / 1000.0
    async with running(driver), controller_process(mqtt_broker.url, rig_name) as proc:
        async with asyncio.timeout(10):
            await driver.alive_event.wait()
        stops_before = len(driver.stops)
        t_lost = now()
        proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        async with asyncio.timeout(5):
            await driver.safe_event.wait()
        assert driver.safe_since is not None
        elapsed = driver.safe_since - t_lost
        # heartbeat timeout plus scheduling slack of this shared 2-core machine
        assert elapsed <= timeout_s + 0.25, elapsed
        assert len(driver.stops) > stops_before
        assert driver.state == "safe"
        if how == "freeze":
            assert elapsed >= timeout_s - 2 * stim.heartbeat_interval_ms / 1000.0
            proc.kill()
        # and it says so on its retained status topic
        b = parse_mqtt_url(mqtt_broker.url)
        async with aiomqtt.Client(b.host, b.port) as client:
            await client.subscribe(Topics(rig_name).status("stim0"), qos=1)
            async with asyncio.timeout(5):
                async for message in client.messages:
                    status = json.loads(message.payload)  # type: ignore[arg-type]
                    if status["state"] == "safe":
                        break


async def test_broker_restart_both_reconnect_and_nothing_runs_late(
    mqtt_broker: Any, rig_name: str
) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, _log):
        first = electrical(rig=rig_name, electrodes=[0])
        pub.submit(first)
        async with asyncio.timeout(5):
            await pub.wait_ack(first.command_id)
        mqtt_broker.stop()
        short = [electrical(rig=rig_name, electrodes=[e], deadline=now() + 0.2) for e in (1, 2, 3)]
        long = [electrical(rig=rig_name, electrodes=[e], deadline=now() + 20.0) for e in (4, 5)]
        for c in short + long:
            pub.submit(c)
        async with asyncio.timeout(5):
            await driver.safe_event.wait()  # no heartbeat for 500 ms: safe, and short expired
        assert now() > max(c.deadline for c in short)
        mqtt_broker.start()
        async with asyncio.timeout(15):
            await pub.wait_connected()
            await driver.alive_event.wait()
            for c in long:
                assert (await pub.wait_ack(c.command_id)).status == "executed"
        done = executed_ids(driver)
        assert done == [first.command_id] + [c.command_id for c in long]
        for c in short:
            assert all(a.status != "executed" for a in pub.acks_for(c.command_id))
        for t, c in driver.executed:
            assert t <= c.deadline
        assert pub.stats.connections >= 2
        assert driver.stats.connections >= 2
        # and the loop carries on
        after = electrical(rig=rig_name, electrodes=[6])
        pub.submit(after)
        async with asyncio.timeout(5):
            assert (await pub.wait_ack(after.command_id)).status == "executed"
