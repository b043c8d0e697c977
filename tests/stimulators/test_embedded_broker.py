"""The embedded amqtt broker (the demo's broker when none is configured)."""

from __future__ import annotations

import asyncio

import pytest

from stimulators.broker import EmbeddedBroker
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
