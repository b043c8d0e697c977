"""The embedded amqtt broker (the demo's broker when none is configured)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest

from stimulators.broker import EmbeddedBroker, free_port
from stimulators.mqtt import StimPublisher, stop_task
from tests.stimulators.helpers import electrical, make_driver, mqtt_config, stimulation_config


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_loop_over_the_embedded_broker_falls_back_to_mqtt_311(rig_name: str) -> None:
    stim = stimulation_config()
    async with EmbeddedBroker() as broker:
        driver = make_driver(stim, mqtt_url=broker.url, rig=rig_name)
        driver.mqtt = broker.mqtt_config()
        task = asyncio.create_task(driver.run())
        try:
            # auto: the first MQTT 5 attempt times out on amqtt, then 3.1.1 connects
            auto = mqtt_config(broker.url, connect_timeout_s=1.0)
            async with StimPublisher(auto, stim, rig_name) as pub:
                cmd = electrical(rig=rig_name)
                pub.submit(cmd)
                async with asyncio.timeout(20):
                    ack = await pub.wait_ack(cmd.command_id)
                assert ack.status == "executed"
        finally:
            await stop_task(task)


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_bci_broker_runs_the_embedded_broker_as_its_own_process(tmp_path: Path) -> None:
    """`bci broker --announce` (what `bci run` starts when no broker is configured):
    it says where it listens once it accepts connections, carries messages, and exits
    cleanly on SIGTERM."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bci",
        "broker",
        "--port",
        str(port),
        "--announce",
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "broker.log").open("wb"),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert json.loads(line) == {"event": "ready", "url": f"mqtt://127.0.0.1:{port}"}
        async with (
            aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as sub,
            aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as pub,
        ):
            await sub.subscribe("bci/test/#", qos=1)
            await pub.publish("bci/test/x", b"hello", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(sub.messages))
            assert message.payload == b"hello"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_bci_broker_on_a_taken_port_says_so_in_one_line() -> None:
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "bci", "broker", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert "cannot start the embedded MQTT broker" in proc.stderr
    assert "Traceback" not in proc.stderr
