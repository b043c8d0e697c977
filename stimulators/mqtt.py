"""MQTT transport: topics, client construction, reconnection, and the controller's publisher.

Topics (``rig`` and ``device`` are config names):

- ``bci/{rig}/stim/{device}/cmd``: commands (JSON, QoS 1, never retained, MQTT 5
  message expiry from the deadline);
- ``bci/{rig}/stim/{device}/ack``: the driver's acknowledgements (QoS 1);
- ``bci/{rig}/stim/{device}/status``: the driver's state (retained, last will ``offline``);
- ``bci/{rig}/controller/heartbeat``: the controller's heartbeat (QoS 0), whose last
  will says ``alive: false``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import random
import socket
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bci.clock import now
from bci.errors import SafetyViolation
from stimulators import safety_kernels
from stimulators.channel import CommandChannel
from stimulators.commands import (
    SCHEMA_VERSION,
    Ack,
    ElectricalPulseTrain,
    OpticalPulseTrain,
    StopAll,
)
from stimulators.config import MqttConfig, StimulationConfig
from stimulators.safety import SafetyEnvelope

__all__ = [
    "FINAL_STATUSES",
    "CancelGuard",
    "PublisherStats",
    "StimPublisher",
    "Topics",
    "connection_loop",
    "make_client",
    "open_channel",
    "stop_task",
]

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"executed", "rejected", "expired", "duplicate"})

AnyCommand = ElectricalPulseTrain | OpticalPulseTrain | StopAll


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one rig."""

    rig: str

    def cmd(self, device: str) -> str:
        return f"bci/{self.rig}/stim/{device}/cmd"

    def ack(self, device: str) -> str:
        return f"bci/{self.rig}/stim/{device}/ack"

    def status(self, device: str) -> str:
        return f"bci/{self.rig}/stim/{device}/status"

    @property
    def heartbeat(self) -> str:
        return f"bci/{self.rig}/controller/heartbeat"

    @property
    def all_acks(self) -> str:
        return f"bci/{self.rig}/stim/+/ack"

    @property
    def all_status(self) -> str:
        return f"bci/{self.rig}/stim/+/status"


class CancelGuard:
    """Re-raise a cancellation that an aiomqtt call swallowed.

    On Python 3.11 ``asyncio.wait_for`` (used inside aiomqtt's publish and subscribe)
    can drop a cancellation that arrives as the operation completes, leaving a loop
    running after its task was cancelled. Make a guard at the start of the loop and
    call :meth:`check` after each such await: it raises when the task received a
    cancellation since then.
    """

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._base = self._task.cancelling() if self._task is not None else 0

    def check(self) -> None:
        if self._task is not None and self._task.cancelling() > self._base:
            raise asyncio.CancelledError


def _protocol(name: str) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V311 if name == "3.1.1" else aiomqtt.ProtocolVersion.V5


def make_client(
    config: MqttConfig,
    *,
    client_id: str,
    protocol: aiomqtt.ProtocolVersion,
    will: aiomqtt.Will | None = None,
    resume: bool | None = None,
    max_incoming: int = 1024,
) -> aiomqtt.Client:
    """An aiomqtt client for ``config`` (not yet connected).

    ``resume``: ``None`` for a session that ends with the connection; ``False`` starts
    a fresh session that the broker keeps for 60 s after a disconnection (MQTT 5) and
    ``True`` resumes it, so QoS 1 messages sent while away are delivered on return.
    The incoming queue is bounded by ``max_incoming`` (aiomqtt discards beyond it).
    """
    broker = config.broker()
    tls_params = None
    tls_insecure = None
    if broker.tls or config.tls is not None:
        t = config.tls
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(t.ca_certs) if t and t.ca_certs else None,
            certfile=str(t.certfile) if t and t.certfile else None,
            keyfile=str(t.keyfile) if t and t.keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        tls_insecure = bool(t and t.insecure)
    kwargs: dict[str, Any] = {}
    if protocol == aiomqtt.ProtocolVersion.V5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if resume is None else 60
        kwargs["properties"] = props
        kwargs["clean_start"] = not resume
    else:
        kwargs["clean_session"] = not resume
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=client_id,
        protocol=protocol,
        will=will,
        keepalive=config.keepalive_s,
        timeout=config.connect_timeout_s,
        tls_params=tls_params,
        tls_insecure=tls_insecure,
        max_queued_incoming_messages=max_incoming,
        # No Nagle delay: a command is one small packet that must leave at once.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **kwargs,
    )


async def open_channel(
    config: MqttConfig,
    channel: CommandChannel | None,
    protocol: aiomqtt.ProtocolVersion,
    *,
    client_id: str,
    **kwargs: Any,
) -> CommandChannel:
    """Start a command channel on the protocol an asyncio session settled on (only the
    first time: it reconnects by itself), and wait until it is usable; raises
    ``MqttError`` after ``connect_timeout_s``, which ends that session."""
    if channel is None:
        v5 = protocol == aiomqtt.ProtocolVersion.V5
        channel = CommandChannel(
            config, client_id=client_id, protocol="5" if v5 else "3.1.1", **kwargs
        ).start()
    if not await asyncio.to_thread(channel.wait_connected, config.connect_timeout_s):
        raise aiomqtt.MqttError(f"the command channel {client_id} could not connect")
    return channel


async def connection_loop(
    config: MqttConfig,
    build: Callable[[aiomqtt.ProtocolVersion], aiomqtt.Client],
    session: Callable[[aiomqtt.Client, aiomqtt.ProtocolVersion], Awaitable[None]],
    *,
    name: str,
    on_disconnect: Callable[[], None] | None = None,
) -> None:
    """Keep a connection up for ever: connect, run ``session``, reconnect on loss.

    Reconnection waits a jittered exponential backoff (``reconnect_min_s`` doubling up
    to ``reconnect_max_s``, drawn uniformly from half to all of it), reset after each
    successful connection. Under ``protocol: auto`` failed first connections alternate
    between MQTT 5 and 3.1.1 until one succeeds. Returns only by cancellation.
    """
    protocol = _protocol(config.protocol)
    settled = config.protocol != "auto"  # auto: settled once a connection succeeded
    attempt = 0
    while True:
        client = build(protocol)
        connected = False
        try:
            async with client:
                connected = settled = True
                attempt = 0
                logger.info("%s: connected to %s", name, config.broker().redacted())
                await session(client, protocol)
        except* aiomqtt.MqttError as group:
            logger.warning("%s: MQTT connection lost or refused: %s", name, group.exceptions[0])
        if not connected and not settled:
            # Some brokers refuse MQTT 5, others (amqtt) do not answer it: alternate.
            v5 = protocol == aiomqtt.ProtocolVersion.V5
            protocol = aiomqtt.ProtocolVersion.V311 if v5 else aiomqtt.ProtocolVersion.V5
            logger.info("%s: trying MQTT %s", name, "3.1.1" if v5 else "5")
            if v5:
                continue
        if on_disconnect is not None:
            on_disconnect()
        delay = min(config.reconnect_max_s, config.reconnect_min_s * 2**attempt)
        attempt = min(attempt + 1, 30)
        await asyncio.sleep(random.uniform(delay / 2, delay))  # backoff timer


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a cancellation was lost."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s ended with %r", task.get_name(), task.exception())


@dataclass(slots=True)
class PublisherStats:
    """Counters of the publisher (all since start)."""

    submitted: int = 0
    rejected: int = 0
    published: int = 0
    dropped_full: int = 0
    dropped_expired: int = 0
    republished: int = 0
    acks: int = 0
    bad_acks: int = 0
    connections: int = 0


class StimPublisher:
    """The controller's side: checks commands against the envelope and publishes them.

    Consumes commands (:mod:`stimulators.commands`); ``submit`` runs the device's
    :class:`SafetyEnvelope` (raising :class:`SafetyViolation`, nothing queued) and puts
    the command on a bounded queue (``mqtt.queue_size``; when full the oldest command
    is dropped and counted). A background task publishes with QoS 1, never retained,
    with an MQTT 5 message expiry from the deadline, drops commands whose deadline has
    passed, republishes a command whose publish was cut by a disconnection (the driver
    executes each command id at most once), and publishes the heartbeat. With
    ``wait_ready`` (default) a command is only sent once its device's driver reports
    ``ready`` on its retained status topic (connected and hearing the controller), so
    nothing is published into a broker that has no driver to deliver it to; commands
    for a device that is not ready wait in the queue until their deadline. Acks from
    every device are kept for :meth:`wait_ack` and passed to ``on_ack``.

    With ``command_channel`` (default) commands travel on a second connection, a
    :class:`~stimulators.channel.CommandChannel` with its own network thread, and
    :meth:`submit` may be called from any thread: when nothing is queued ahead of it
    and its device is ready, the command is written to the socket before ``submit``
    returns, without waiting for the event loop (the closed loop's hot path calls it
    from its own thread). Acks, states and the heartbeat (with its last will) stay on
    the asyncio connection.

    Use as ``async with StimPublisher(...) as pub:``.
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        stimulation: StimulationConfig,
        rig: str,
        *,
        client_id: str | None = None,
        heartbeat: bool = True,
        ack_history: int = 10_000,
        on_ack: Callable[[Ack], None] | None = None,
        wait_ready: bool = True,
        command_channel: bool = True,
    ) -> None:
        self.mqtt = mqtt
        self.stimulation = stimulation
        self.rig = rig
        self.topics = Topics(rig)
        self.client_id = client_id or mqtt.client_id or f"bci-{rig}-ctl-{uuid.uuid4().hex[:8]}"
        self.heartbeat_enabled = heartbeat
        self.envelopes = {d.name: SafetyEnvelope(d) for d in stimulation.devices}
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self._queue: collections.deque[AnyCommand] = collections.deque()
        self._queue_event = asyncio.Event()
        self._acks: collections.OrderedDict[uuid.UUID, list[Ack]] = collections.OrderedDict()
        self._ack_history = ack_history
        self._ack_cond = asyncio.Condition()
        self._on_ack = on_ack
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self.wait_ready = wait_ready
        #: Last state each device's driver reported (``ready``, ``safe``, ``offline``).
        self.device_states: dict[str, str] = {}
        self._status_event = asyncio.Event()
        self.use_channel = command_channel
        self.channel: CommandChannel | None = None
        # submit() may come from another thread: envelope, queue and counters under it
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> StimPublisher:
        await asyncio.to_thread(safety_kernels.warm_up)  # no compilation at the first command
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name=f"stim-publisher-{self.rig}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self.channel is not None:
            await asyncio.to_thread(self.channel.close)
            self.channel = None

    async def wait_connected(self) -> None:
        await self.connected.wait()

    # ------------------------------------------------------------ commands

    def check(self, command: AnyCommand, at: float | None = None) -> None:
        """Run the envelope on ``command`` without recording it (raises SafetyViolation)."""
        self._envelope(command).check(command, now() if at is None else at)

    def submit(self, command: AnyCommand) -> None:
        """Check ``command`` against its device's envelope and send it (see the class
        notes: at once from the calling thread when it can, else through the queue).
        Thread-safe.

        Raises :class:`SafetyViolation` (and sends nothing) when it breaks a limit.
        """
        envelope = self._envelope(command)
        with self._lock:
            try:
                envelope.admit(command, now())
            except SafetyViolation:
                self.stats.rejected += 1
                raise
            self.stats.submitted += 1
            if self._queue or not self._send_direct(command):
                self._enqueue(command)

    def rehearse(self, command: AnyCommand) -> None:
        """Put ``command`` through what :meth:`submit` does before the socket (the
        envelope's check, the stamping and the encoding) and send nothing, changing no
        state: run between real commands, it keeps that code in the processor's cache
        (see ``loop.rehearse_ms``). A command the envelope would refuse is ignored."""
        t = now()
        with self._lock, contextlib.suppress(SafetyViolation):
            self._envelope(command).check(command, t)
        self._payload(command, t)

    def _ready(self, device: str) -> bool:
        return not self.wait_ready or self.device_states.get(device) == "ready"

    def _send_direct(self, command: AnyCommand) -> bool:
        """Publish ``command`` on the command channel now, if it can go now (caller
        holds the lock)."""
        channel = self.channel
        if channel is None or not channel.connected.is_set() or not self._ready(command.device):
            return False
        t = now()
        if t > command.deadline:
            return False  # the queue drops and counts it
        if not channel.publish(
            self.topics.cmd(command.device),
            self._payload(command, t),
            qos=1,
            expiry_s=max(1, math.ceil(command.deadline - t)),
        ):
            return False
        self.stats.published += 1
        return True

    @staticmethod
    def _payload(command: AnyCommand, sent: float) -> bytes:
        """``command`` on the wire, stamped with the LSL time it is ``sent``."""
        return command.model_copy(update={"sent": sent}).model_dump_json().encode()

    def _envelope(self, command: AnyCommand) -> SafetyEnvelope:
        if command.rig != self.rig:
            raise SafetyViolation(
                "command is for another rig", rule="device.mismatch", rig=self.rig
            )
        envelope = self.envelopes.get(command.device)
        if envelope is None:
            raise SafetyViolation("unknown device", rule="device.mismatch", device=command.device)
        return envelope

    def _enqueue(self, command: AnyCommand, front: bool = False) -> None:
        if len(self._queue) >= self.mqtt.queue_size:
            dropped = self._queue.popleft()
            self.stats.dropped_full += 1
            logger.warning("publisher queue full: dropped command %s", dropped.command_id)
        if front:
            self._queue.appendleft(command)
        else:
            self._queue.append(command)
        if self._loop is None or self._loop_thread == threading.get_ident():
            self._queue_event.set()
        else:
            self._loop.call_soon_threadsafe(self._queue_event.set)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------ acks

    def acks_for(self, command_id: uuid.UUID) -> list[Ack]:
        return list(self._acks.get(command_id, ()))

    async def wait_ack(
        self, command_id: uuid.UUID, statuses: frozenset[str] = FINAL_STATUSES
    ) -> Ack:
        """Wait for an ack of ``command_id`` with one of ``statuses`` (caller sets the
        deadline, e.g. ``async with asyncio.timeout(1):``)."""

        def found() -> Ack | None:
            for ack in self._acks.get(command_id, ()):
                if ack.status in statuses:
                    return ack
            return None

        async with self._ack_cond:
            await self._ack_cond.wait_for(lambda: found() is not None)
        ack = found()
        assert ack is not None
        return ack

    async def _on_ack_message(self, payload: bytes) -> None:
        try:
            ack = Ack.model_validate_json(payload)
        except ValueError:
            self.stats.bad_acks += 1
            logger.warning("unreadable ack: %.200r", payload)
            return
        self.stats.acks += 1
        if ack.command_id is not None:
            self._acks.setdefault(ack.command_id, []).append(ack)
            while len(self._acks) > self._ack_history:
                self._acks.popitem(last=False)
        if self._on_ack is not None:
            self._on_ack(ack)
        async with self._ack_cond:
            self._ack_cond.notify_all()

    # ------------------------------------------------------------ background

    def _heartbeat_payload(self, alive: bool) -> bytes:
        self._seq += 1
        return json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "rig": self.rig,
                "controller": self.client_id,
                "alive": alive,
                "seq": self._seq,
                "time": now(),
            }
        ).encode()

    def _build(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.heartbeat, self._heartbeat_payload(False), qos=1)
        return make_client(self.mqtt, client_id=self.client_id, protocol=protocol, will=will)

    async def _run(self) -> None:
        try:
            await connection_loop(
                self.mqtt,
                self._build,
                self._session,
                name=f"publisher {self.client_id}",
                on_disconnect=self.connected.clear,
            )
        finally:
            self.connected.clear()

    async def _session(self, client: aiomqtt.Client, protocol: aiomqtt.ProtocolVersion) -> None:
        guard = CancelGuard()
        self.device_states.clear()
        await client.subscribe(self.topics.all_acks, qos=1)
        await client.subscribe(self.topics.all_status, qos=1)
        guard.check()
        if self.use_channel:
            self.channel = await open_channel(
                self.mqtt, self.channel, protocol, client_id=f"{self.client_id}-cmd"
            )
        self.stats.connections += 1
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(client), name="publisher-acks")
                tg.create_task(self._send(client, protocol), name="publisher-send")
                if self.heartbeat_enabled:
                    tg.create_task(self._heartbeat(client), name="publisher-heartbeat")
        except asyncio.CancelledError:
            # A clean stop: tell the drivers now, as the last will would.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.publish(
                        self.topics.heartbeat, self._heartbeat_payload(False), qos=1
                    )
            raise
        finally:
            self.connected.clear()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes):
                continue
            if message.topic.matches(self.topics.all_acks):
                await self._on_ack_message(message.payload)
            elif message.topic.matches(self.topics.all_status):
                self._on_status(message.topic.value.split("/")[3], message.payload)

    def _on_status(self, device: str, payload: bytes) -> None:
        try:
            state = json.loads(payload).get("state")
        except (ValueError, AttributeError):
            state = None
        self.device_states[device] = str(state)
        self._queue_event.set()
        self._status_event.set()

    async def wait_device_ready(self, device: str) -> None:
        """Wait until ``device``'s driver reports ``ready`` (caller sets the deadline)."""
        while self.device_states.get(device) != "ready":
            self._status_event.clear()
            await self._status_event.wait()

    def _next_sendable(self) -> AnyCommand | None:
        """Remove and return the first queued command whose device is ready, dropping
        expired ones on the way."""
        with self._lock:
            return self._pop_sendable()

    def _pop_sendable(self) -> AnyCommand | None:
        """:meth:`_next_sendable` for a caller that holds the lock."""
        t = now()
        i = 0
        while i < len(self._queue):
            command = self._queue[i]
            if t > command.deadline:
                del self._queue[i]
                self.stats.dropped_expired += 1
                logger.info("not publishing command %s: past its deadline", command.command_id)
                continue
            if self._ready(command.device):
                del self._queue[i]
                return command
            i += 1
        return None

    def _drain_on_channel(self) -> bool:
        """Send every queued command that can go now on the command channel, in order
        and under the lock (so a command submitted meanwhile cannot overtake them).
        Returns whether one is held back because the channel cannot take it yet."""
        with self._lock:
            while (command := self._pop_sendable()) is not None:
                if not self._send_direct(command):
                    self._queue.appendleft(command)
                    return True
        return False

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        interval = self.stimulation.heartbeat_interval_ms / 1000.0
        guard = CancelGuard()
        while True:
            await client.publish(self.topics.heartbeat, self._heartbeat_payload(True), qos=0)
            guard.check()
            await asyncio.sleep(interval)  # the heartbeat's period

    async def _send(self, client: aiomqtt.Client, protocol: aiomqtt.ProtocolVersion) -> None:
        guard = CancelGuard()
        while True:
            if self.channel is not None:
                if self._drain_on_channel():
                    await asyncio.sleep(0.005)  # the channel reconnects in its own thread
                else:
                    self._queue_event.clear()
                    await self._queue_event.wait()
                continue
            command = self._next_sendable()
            if command is None:
                self._queue_event.clear()
                await self._queue_event.wait()
                continue
            t = now()
            stamped = command.model_copy(update={"sent": t})
            props = None
            if protocol == aiomqtt.ProtocolVersion.V5:
                props = Properties(PacketTypes.PUBLISH)
                props.MessageExpiryInterval = max(1, math.ceil(command.deadline - t))
            try:
                await client.publish(
                    self.topics.cmd(command.device),
                    stamped.model_dump_json().encode(),
                    qos=1,
                    retain=False,
                    properties=props,
                )
            except aiomqtt.MqttError:
                # Maybe delivered, maybe not: send again after reconnecting (the driver
                # executes a command id at most once); the deadline still applies.
                self.stats.republished += 1
                self._enqueue(command, front=True)
                raise
            self.stats.published += 1
            guard.check()
