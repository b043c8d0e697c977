"""The command channel: commands written from any thread, read and stamped on arrival.

Against a private broker (Mosquitto, else the embedded amqtt broker).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

from bci.clock import now
from stimulators.channel import CommandChannel
from tests.stimulators.helpers import electrical, mqtt_config
from tests.stimulators.test_mqtt import loop_setup


def protocol_of(broker: Any) -> str:
    # the embedded amqtt broker speaks MQTT 3.1.1 only
    return "5" if type(broker).__name__ == "MosquittoBroker" else "3.1.1"


class Inbox:
    """What a subscribing channel received: (topic, payload, received) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, float]] = []
        self.cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, received: float) -> None:
        with self.cond:
            self.items.append((topic, payload, received))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, float]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), (
                f"got {len(self.items)} of {n} messages"
            )
            return list(self.items)


def channels(broker: Any, topic: str, inbox: Inbox) -> tuple[CommandChannel, CommandChannel]:
    cfg = mqtt_config(broker.url)
    tag = uuid.uuid4().hex[:8]
    proto = protocol_of(broker)
    sub = CommandChannel(
        cfg,
        client_id=f"sub-{tag}",
        protocol=proto,
        subscriptions=((topic, 1),),
        on_message=inbox,
    )
    pub = CommandChannel(cfg, client_id=f"pub-{tag}", protocol=proto)
    return sub, pub


def test_messages_from_other_threads_arrive_in_order_stamped_on_arrival(mqtt_broker: Any) -> None:
    inbox = Inbox()
    topic = f"test/{uuid.uuid4().hex}/cmd"
    sub, pub = channels(mqtt_broker, topic, inbox)
    with sub, pub:
        assert sub.wait_connected(10)
        assert pub.wait_connected(10)

        def send(thread: int) -> None:
            for i in range(200):
                body = {"thread": thread, "i": i, "sent": now()}
                assert pub.publish(topic, json.dumps(body).encode(), expiry_s=5)

        workers = [threading.Thread(target=send, args=(k,)) for k in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        items = inbox.wait(400)
    bodies = [json.loads(p) for _, p, _ in items]
    for k in range(2):
        # each thread's messages leave and arrive in the order it wrote them
        assert [b["i"] for b in bodies if b["thread"] == k] == list(range(200))
    for (_, _, received), body in zip(items, bodies, strict=True):
        assert received >= body["sent"]
    assert pub.published == 400


def test_publish_without_a_connection_says_so_and_queues_nothing(mqtt_broker: Any) -> None:
    inbox = Inbox()
    topic = f"test/{uuid.uuid4().hex}/cmd"
    sub, pub = channels(mqtt_broker, topic, inbox)
    assert not pub.publish(topic, b"before start")  # not started: not connected
    with sub, pub:
        assert sub.wait_connected(10)
        assert pub.wait_connected(10)
        assert pub.publish(topic, b"one")
        inbox.wait(1)
        mqtt_broker.stop()
        deadline = time.monotonic() + 10
        while pub.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pub.publish(topic, b"while the broker is down")
        mqtt_broker.start()
        # both reconnect by themselves, and the subscription is restored
        assert sub.wait_connected(15)
        assert pub.wait_connected(15)
        assert pub.publish(topic, b"two")
        items = inbox.wait(2)
        assert [p for _, p, _ in items] == [b"one", b"two"]
        assert sub.connections >= 2
        assert pub.connections >= 2


async def test_a_command_submitted_from_another_thread_is_on_the_wire_when_submit_returns(
    mqtt_broker: Any, rig_name: str
) -> None:
    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, _log):
        assert pub.channel is not None
        assert driver.channel is not None
        async with asyncio.timeout(5):
            await pub.wait_device_ready("stim0")
        cmd = electrical(rig=rig_name, deadline=now() + 2.0)
        published_before = pub.stats.published

        def hot_thread() -> int:
            pub.submit(cmd)
            return pub.stats.published  # read before this thread gives the loop a turn

        published_after = await asyncio.to_thread(hot_thread)
        # sent by the submitting thread itself, not queued for the event loop
        assert published_after == published_before + 1
        assert pub.queued == 0
        async with asyncio.timeout(5):
            ack = await pub.wait_ack(cmd.command_id)
        assert ack.status == "executed"
        assert ack.sent is not None
        assert ack.sent <= ack.received


async def test_a_rehearsal_sends_nothing_and_changes_nothing(
    mqtt_broker: Any, rig_name: str
) -> None:
    """``StimPublisher.rehearse`` runs the envelope's check and the encoding of a
    command between real ones (``loop.rehearse_ms``): no state of the envelope
    changes, nothing reaches the driver, and the next real command goes out as usual."""
    import copy

    async with loop_setup(mqtt_broker, rig_name) as (pub, driver, log):
        async with asyncio.timeout(5):
            await pub.wait_device_ready("stim0")
        first = electrical(rig=rig_name, deadline=now() + 2.0)
        await asyncio.to_thread(pub.submit, first)
        async with asyncio.timeout(5):
            await pub.wait_ack(first.command_id)
        envelope = pub.envelopes["stim0"]
        ledger = copy.deepcopy(envelope._estate)
        published = pub.stats.published
        # one the envelope would accept, one it would refuse (amplitude), and one for a
        # device nobody knows: all three only rehearsed
        for cmd in (
            electrical(rig=rig_name, deadline=now() + 2.0, electrodes=[2]),
            electrical(rig=rig_name, deadline=now() + 2.0, amplitudes_ua=(1e5, 1e5)),
            electrical(rig=rig_name, deadline=now() + 2.0, device="nobody"),
        ):
            await asyncio.to_thread(pub.rehearse, cmd)
        assert pub.stats.published == published
        assert pub.stats.submitted == 1
        assert envelope._estate.keys() == ledger.keys()
        for electrode, state in ledger.items():
            now_state = envelope._estate[electrode]
            assert (now_state.last_pulse, now_state.last_end) == (
                state.last_pulse,
                state.last_end,
            )
            assert (now_state.charge.data == state.charge.data).all()
        await asyncio.sleep(0.3)
        assert [a.command_id for a in log.acks if a.command_id != first.command_id] == []
        assert len(driver.executed) == 1
        second = electrical(rig=rig_name, deadline=now() + 2.0, electrodes=[2])
        await asyncio.to_thread(pub.submit, second)
        async with asyncio.timeout(5):
            ack = await pub.wait_ack(second.command_id)
        assert ack.status == "executed"


def test_expiry_properties_are_packed_once_as_paho_would_pack_them() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from stimulators.channel import _Packed

    for seconds in (1, 7, 300, 2**31):
        ours = _Packed(PacketTypes.PUBLISH)
        ours.MessageExpiryInterval = seconds
        ours.freeze()
        paho_props = Properties(PacketTypes.PUBLISH)
        paho_props.MessageExpiryInterval = seconds
        assert ours.pack() == paho_props.pack()
