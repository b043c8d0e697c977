"""The driver base class: everything between the broker and a device's hardware.

A driver subscribes to its device's command topic and the controller heartbeat,
decodes and validates each command, runs the same :class:`SafetyEnvelope` as the
controller, checks the deadline on arrival and again just before execution, executes
each command id at most once, and acknowledges every message (malformed ones with a
``protocol.*`` rejection). When the controller's heartbeat is missing for
``heartbeat_timeout_ms`` (default 500 ms) or its last will arrives, the driver stops
all output and reports ``safe`` on its retained status topic.

A hardware driver is one small subclass: implement :meth:`Driver.execute` (start the
output and return once it has started) and :meth:`Driver.stop_output`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import aiomqtt
from pydantic import ValidationError

from bci.clock import now
from bci.errors import SafetyViolation
from stimulators import safety_kernels
from stimulators.channel import CommandChannel
from stimulators.commands import (
    SCHEMA_VERSION,
    Ack,
    AckStatus,
    ElectricalPulseTrain,
    OpticalPulseTrain,
    StopAll,
    command_adapter,
)
from stimulators.config import (
    DryRunDriverConfig,
    ElectricalDeviceConfig,
    MqttConfig,
    OpticalDeviceConfig,
    SimElectricalDriverConfig,
    SimOpticalDriverConfig,
    StimulationConfig,
)
from stimulators.mqtt import CancelGuard, Topics, connection_loop, make_client, open_channel
from stimulators.safety import Admission, SafetyEnvelope

__all__ = ["PROTOCOL_RULES", "Driver", "DriverStats", "Execution"]

logger = logging.getLogger(__name__)

AnyCommand = ElectricalPulseTrain | OpticalPulseTrain | StopAll
DriverSpec = DryRunDriverConfig | SimElectricalDriverConfig | SimOpticalDriverConfig
DeviceConfig = ElectricalDeviceConfig | OpticalDeviceConfig

#: Rules a driver can reject with besides the envelope's (:data:`stimulators.safety.RULES`).
PROTOCOL_RULES: dict[str, str] = {
    "protocol.too_large": "payload larger than the driver's max_payload_bytes",
    "protocol.invalid_json": "payload is not UTF-8 JSON (NaN and Infinity are not JSON)",
    "protocol.not_object": "payload is JSON but not an object",
    "protocol.schema_version": "missing or unsupported schema_version",
    "protocol.invalid_command": "the command does not match the schema",
    "protocol.wrong_target": "the command names another rig or device than its topic",
    "protocol.deadline_too_far": "the deadline lies further ahead than max_deadline_s",
    "driver.no_controller": "no live controller heartbeat (the driver is in its safe state)",
    "driver.overloaded": "too many recent command ids to remember",
    "driver.execution_failed": "the device failed while starting the output",
}

_MAX_SEEN = 200_000


class _Reject(Exception):
    def __init__(self, rule: str, message: str, command_id: uuid.UUID | None, **values: Any):
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.command_id = command_id
        self.values = values


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _command_id_of(obj: Any) -> uuid.UUID | None:
    if isinstance(obj, dict):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return uuid.UUID(str(obj.get("command_id")))
    return None


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` made JSON-safe (no NaN, no odd types), for an ack."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
            out[key] = value
        except (TypeError, ValueError):
            out[key] = repr(value)[:200]
    return out


@dataclass(frozen=True, slots=True)
class Execution:
    """What :meth:`Driver.execute` reports: LSL ``time`` (s) output began and, when
    known, the rig's absolute ``start_sample``."""

    time: float
    start_sample: int | None = None


@dataclass(slots=True)
class DriverStats:
    """Counters of one driver (all since start)."""

    received: int = 0
    accepted: int = 0
    executed: int = 0
    rejected: int = 0
    expired: int = 0
    duplicate: int = 0
    outgoing_dropped: int = 0
    incoming_dropped: int = 0
    safe_entries: int = 0
    connections: int = 0
    heartbeats: int = 0


class Driver(ABC):
    """Base of every stimulation driver (one device, one process or task).

    Consumes command payloads (bytes, from MQTT or :meth:`process`); produces acks on
    ``bci/{rig}/stim/{device}/ack`` and the device state on ``.../status`` (retained:
    ``ready``, ``safe`` with a reason, ``offline`` as last will). Subclasses implement
    :meth:`execute` and :meth:`stop_output`, and may override :meth:`validate`,
    :meth:`open` and :meth:`close`. Run with ``await driver.run()`` until cancelled.
    """

    kind: ClassVar[str]
    #: Command kinds this driver can execute (stop_all always).
    accepts: ClassVar[tuple[type, ...]] = (ElectricalPulseTrain, OpticalPulseTrain)
    #: Deadline (s) of one call to :meth:`execute` or :meth:`stop_output`.
    hardware_timeout_s: ClassVar[float] = 0.5

    def __init__(
        self,
        spec: DriverSpec,
        *,
        rig: str,
        device: DeviceConfig,
        stimulation: StimulationConfig,
        mqtt: MqttConfig | None = None,
    ) -> None:
        self.spec = spec
        self.rig = rig
        self.device = device
        self.stimulation = stimulation
        self.mqtt = mqtt
        self.topics = Topics(rig)
        self.name = f"{self.kind}:{device.name}"
        self.client_id = spec.client_id or f"bci-{rig}-drv-{device.name}"
        self.envelope = SafetyEnvelope(device)
        self.stats = DriverStats()
        self.heartbeat_timeout_s = stimulation.heartbeat_timeout_ms / 1000.0
        self.controller_alive = False
        self.state = "safe"
        self.state_reason = "no controller yet"
        #: Set whenever the driver enters its safe state (tests and supervisors wait on it).
        self.safe_event = asyncio.Event()
        self.safe_since: float | None = None
        #: Set while a controller heartbeat is alive.
        self.alive_event = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._last_heartbeat = -1e300
        self._heartbeat_event = asyncio.Event()
        self._seen: set[uuid.UUID] = set()
        self._seen_by_deadline: list[tuple[float, uuid.UUID]] = []  # a heap
        self._outgoing: collections.deque[tuple[str, bytes, int, bool]] = collections.deque()
        self._outgoing_event = asyncio.Event()
        self._status_payload = self._status_json()
        #: Commands read by the command channel's thread, for the loop (payload, received).
        self.channel: CommandChannel | None = None
        self._incoming: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue(
            maxsize=spec.ack_queue_size
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ hardware hooks

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the hardware (default: nothing)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the hardware (default: nothing). Called after :meth:`stop_output`."""

    def validate(self, command: AnyCommand) -> None:  # noqa: B027 - optional hook
        """Device-specific checks beyond the envelope; raise SafetyViolation to reject."""

    @abstractmethod
    async def execute(self, command: ElectricalPulseTrain | OpticalPulseTrain) -> Execution:
        """Start the output described by ``command``; return once it has started."""

    @abstractmethod
    async def stop_output(self) -> None:
        """Stop all output now (the safe state). Must be idempotent and quick."""

    # ------------------------------------------------------------ command handling

    async def process(self, payload: bytes, received: float | None = None) -> list[Ack]:
        """Handle one command message; return the acks it produced (also queued for MQTT).

        Never raises for a bad payload: it is rejected with a ``protocol.*`` rule.
        """
        received = now() if received is None else received
        self.stats.received += 1
        acks: list[Ack] = []
        try:
            command = self._decode(payload)
        except _Reject as r:
            acks.append(self._reject(r.command_id, received, r.rule, r.message, r.values))
            return acks
        acks.extend(await self._handle(command, received))
        return acks

    def _decode(self, payload: bytes) -> AnyCommand:
        if len(payload) > self.spec.max_payload_bytes:
            raise _Reject(
                "protocol.too_large",
                "payload too large",
                None,
                size=len(payload),
                max_payload_bytes=self.spec.max_payload_bytes,
            )
        try:
            obj = json.loads(payload, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise _Reject("protocol.invalid_json", f"not JSON: {exc}"[:300], None) from exc
        command_id = _command_id_of(obj)
        if not isinstance(obj, dict):
            raise _Reject("protocol.not_object", "payload is not a JSON object", None)
        version = obj.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise _Reject(
                "protocol.schema_version",
                "unsupported schema version",
                command_id,
                schema_version=repr(version)[:50],
                supported=SCHEMA_VERSION,
            )
        try:
            command = command_adapter.validate_python(obj)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)[:5]
            ]
            raise _Reject(
                "protocol.invalid_command", "invalid command", command_id, errors=errors
            ) from exc
        if command.rig != self.rig or command.device != self.device.name:
            raise _Reject(
                "protocol.wrong_target",
                "command names another rig or device",
                command.command_id,
                rig=command.rig,
                device=command.device,
            )
        return command

    async def _handle(self, command: AnyCommand, received: float) -> list[Ack]:
        cid = command.command_id
        if cid in self._seen:
            return [self._ack(command, "duplicate", received)]
        self._forget_old(received)
        if len(self._seen) >= _MAX_SEEN:
            return [self._reject_cmd(command, received, "driver.overloaded", "too many ids", {})]
        self._seen.add(cid)
        heapq.heappush(self._seen_by_deadline, (command.deadline, cid))
        if received > command.deadline:
            return [self._ack(command, "expired", received)]
        if command.deadline - received > self.stimulation.max_deadline_s:
            return [
                self._reject_cmd(
                    command,
                    received,
                    "protocol.deadline_too_far",
                    "deadline too far ahead",
                    {"ahead_s": command.deadline - received},
                )
            ]
        if isinstance(command, StopAll):
            return await self._stop_all(command, received)
        if self.spec.require_controller and not self.controller_alive:
            return [
                self._reject_cmd(command, received, "driver.no_controller", self.state_reason, {})
            ]
        if not isinstance(command, self.accepts):
            return [
                self._reject_cmd(
                    command, received, "device.kind", "unsupported kind", {"kind": command.kind}
                )
            ]
        start = now()
        try:
            self.validate(command)
            admission = self.envelope.check(command, start)
        except SafetyViolation as v:
            values = {k: val for k, val in v.context.items() if k != "rule"}
            return [self._reject_cmd(command, received, v.rule, v.message, values)]
        acks = [self._ack(command, "accepted", received)]
        acks.append(await self._execute(command, admission, received))
        return acks

    async def _execute(
        self,
        command: ElectricalPulseTrain | OpticalPulseTrain,
        admission: Admission,
        received: float,
    ) -> Ack:
        # The last check before output: nothing awaits between here and execute().
        if now() > command.deadline:
            return self._ack(command, "expired", received)
        self.envelope.commit(admission)
        try:
            async with asyncio.timeout(self.hardware_timeout_s):
                result = await self.execute(command)
        except Exception as exc:
            logger.exception("%s: execution of %s failed", self.name, command.command_id)
            with contextlib.suppress(Exception):
                await self.stop_output()
            return self._reject_cmd(
                command,
                received,
                "driver.execution_failed",
                f"{type(exc).__name__}: {exc}"[:300],
                {},
            )
        return self._ack(
            command,
            "executed",
            received,
            executed_at=result.time,
            start_sample=result.start_sample,
        )

    async def _stop_all(self, command: StopAll, received: float) -> list[Ack]:
        acks = [self._ack(command, "accepted", received)]
        await self.stop_output()
        t = now()
        self.envelope.stopped(t)
        acks.append(self._ack(command, "executed", received, executed_at=t))
        return acks

    def _forget_old(self, t: float) -> None:
        # A forgotten id whose deadline has passed can only come back expired.
        heap = self._seen_by_deadline
        while heap and heap[0][0] < t - 1.0:
            self._seen.discard(heapq.heappop(heap)[1])

    # ------------------------------------------------------------ acks and status

    def _ack(
        self,
        command: AnyCommand,
        status: AckStatus,
        received: float,
        **extra: Any,
    ) -> Ack:
        return self._emit(
            Ack.model_construct(
                command_id=command.command_id,
                rig=self.rig,
                device=self.device.name,
                driver=self.name,
                status=status,
                received=received,
                time=now(),
                cause=command.cause,
                sent=command.sent,
                **extra,
            )
        )

    def _reject_cmd(
        self, command: AnyCommand, received: float, rule: str, message: str, values: dict
    ) -> Ack:
        return self._emit(
            Ack.model_construct(
                command_id=command.command_id,
                rig=self.rig,
                device=self.device.name,
                driver=self.name,
                status="rejected",
                received=received,
                time=now(),
                rule=rule,
                message=message,
                values=_jsonable(values),
                cause=command.cause,
                sent=command.sent,
            )
        )

    def _reject(
        self, command_id: uuid.UUID | None, received: float, rule: str, message: str, values: dict
    ) -> Ack:
        return self._emit(
            Ack.model_construct(
                command_id=command_id,
                rig=self.rig,
                device=self.device.name,
                driver=self.name,
                status="rejected",
                received=received,
                time=now(),
                rule=rule,
                message=message,
                values=_jsonable(values),
            )
        )

    def _emit(self, ack: Ack) -> Ack:
        # Acks are built with model_construct (no validation: every field comes from a
        # validated command or from this driver), which saves ~30 µs each.
        setattr(self.stats, ack.status, getattr(self.stats, ack.status) + 1)
        if ack.status == "rejected":
            logger.info("%s: rejected %s: %s %s", self.name, ack.command_id, ack.rule, ack.values)
        self._send(self.topics.ack(self.device.name), ack.model_dump_json().encode(), 1, False)
        self.on_ack(ack)
        return ack

    def on_ack(self, ack: Ack) -> None:  # noqa: B027 - optional hook
        """Called with every ack made (default: nothing); e.g. to record it."""

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if len(self._outgoing) >= self.spec.ack_queue_size:
            self._outgoing.popleft()
            self.stats.outgoing_dropped += 1
        self._outgoing.append((topic, payload, qos, retain))
        self._outgoing_event.set()

    def _status_json(self, state: str | None = None) -> bytes:
        return json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "rig": self.rig,
                "device": self.device.name,
                "driver": self.name,
                "state": state or self.state,
                "reason": self.state_reason,
                "time": now(),
            }
        ).encode()

    def _publish_status(self) -> None:
        self._status_payload = self._status_json()
        self._send(self.topics.status(self.device.name), self._status_payload, 1, True)

    # ------------------------------------------------------------ controller watch

    def on_heartbeat(self, payload: bytes) -> None:
        """Handle a controller heartbeat (or its last will, ``alive: false``)."""
        try:
            beat = json.loads(payload, parse_constant=_no_constants)
            alive = bool(beat.get("alive", False)) if isinstance(beat, dict) else False
        except (ValueError, RecursionError):
            logger.warning("%s: unreadable heartbeat %.100r", self.name, payload)
            return
        if not alive:
            self._go_safe("controller last will or stop")
            return
        self.stats.heartbeats += 1
        self._last_heartbeat = now()
        if not self.controller_alive:
            self.controller_alive = True
            self.alive_event.set()
            self.safe_event.clear()
            self.state, self.state_reason = "ready", "controller alive"
            self._publish_status()
        self._heartbeat_event.set()

    def _go_safe(self, reason: str) -> None:
        self.controller_alive = False
        self.alive_event.clear()
        if self.state == "safe" and self.safe_since is not None:
            return
        self.state, self.state_reason = "safe", reason
        self._stop_task = asyncio.get_running_loop().create_task(self._enter_safe(reason))

    async def _enter_safe(self, reason: str) -> None:
        try:
            async with asyncio.timeout(self.hardware_timeout_s):
                await self.stop_output()
        except Exception:
            logger.exception("%s: stopping the output failed", self.name)
            self.state_reason = f"{reason}; stopping the output FAILED"
        finally:
            t = now()
            self.envelope.stopped(t)
            self.safe_since = t
            self.stats.safe_entries += 1
            logger.warning("%s: safe state (%s)", self.name, reason)
            self._publish_status()
            self.safe_event.set()

    async def _watchdog(self) -> None:
        while True:
            if not self.controller_alive:
                self._heartbeat_event.clear()
                await self._heartbeat_event.wait()
                continue
            remaining = self._last_heartbeat + self.heartbeat_timeout_s - now()
            if remaining <= 0:
                self._go_safe(f"no heartbeat for {self.heartbeat_timeout_s * 1000:.0f} ms")
            else:
                await asyncio.sleep(remaining)  # the watchdog's timer

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Open the device, connect, and serve commands until cancelled; always ends
        with the output stopped and the device closed."""
        if self.mqtt is None:
            raise ValueError("a driver needs an MQTT config to run")
        mqtt = self.mqtt
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(safety_kernels.warm_up)  # not at the first command
        await self.open()
        try:
            await self.stop_output()
            self.safe_since = now()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watchdog(), name=f"{self.name}-watchdog")
                tg.create_task(self._command_loop(), name=f"{self.name}-commands")
                tg.create_task(
                    connection_loop(
                        mqtt,
                        self._build,
                        self._session,
                        name=f"driver {self.name}",
                        on_disconnect=self.connected.clear,
                    ),
                    name=f"{self.name}-mqtt",
                )
        finally:
            with contextlib.suppress(Exception):
                await self.stop_output()
            if self.channel is not None:
                await asyncio.to_thread(self.channel.close)
                self.channel = None
            await self.close()

    def _build(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        assert self.mqtt is not None
        will = aiomqtt.Will(
            self.topics.status(self.device.name),
            self._status_json("offline"),
            qos=1,
            retain=True,
        )
        return make_client(
            self.mqtt,
            client_id=self.client_id,
            protocol=protocol,
            will=will,
            # a fresh session when this process starts (nothing from a previous process
            # is redelivered: its executed ids are unknown here), then resume it
            resume=self.stats.connections > 0,
        )

    async def _session(self, client: aiomqtt.Client, protocol: aiomqtt.ProtocolVersion) -> None:
        guard = CancelGuard()
        if not self.spec.command_channel:
            await client.subscribe(self.topics.cmd(self.device.name), qos=1)
        await client.subscribe(self.topics.heartbeat, qos=0)
        guard.check()
        if self.spec.command_channel:
            assert self.mqtt is not None  # run() checked
            # subscribed before ``ready`` is said, so that commands can arrive
            self.channel = await open_channel(
                self.mqtt,
                self.channel,
                protocol,
                client_id=f"{self.client_id}-cmd",
                subscriptions=((self.topics.cmd(self.device.name), 1),),
                on_message=self._on_channel_message,
                resume=True,
            )
        self.stats.connections += 1
        self._publish_status()
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(client), name=f"{self.name}-read")
                tg.create_task(self._write_loop(client), name=f"{self.name}-write")
        except asyncio.CancelledError:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.publish(
                        self.topics.status(self.device.name),
                        self._status_json("offline"),
                        qos=1,
                        retain=True,
                    )
            raise
        finally:
            self.connected.clear()

    def _on_channel_message(self, _topic: str, payload: bytes, received: float) -> None:
        # the channel's thread: stamped on arrival, handled in order on the loop
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._take, payload, received)

    def _take(self, payload: bytes, received: float) -> None:
        try:
            self._incoming.put_nowait((payload, received))
        except asyncio.QueueFull:
            self.stats.incoming_dropped += 1
            logger.error("%s: command queue full: a command was dropped", self.name)

    async def _command_loop(self) -> None:
        while True:
            payload, received = await self._incoming.get()
            await self.process(payload, received)

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        cmd_topic = self.topics.cmd(self.device.name)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload if payload is not None else "").encode()
            if message.topic.matches(cmd_topic):
                await self.process(payload)
            elif message.topic.matches(self.topics.heartbeat):
                self.on_heartbeat(payload)

    async def _write_loop(self, client: aiomqtt.Client) -> None:
        guard = CancelGuard()
        while True:
            while not self._outgoing:
                self._outgoing_event.clear()
                await self._outgoing_event.wait()
            # Send everything queued at once (paho writes in call order) and then wait
            # for the broker's acknowledgements, so an 'executed' ack does not wait for
            # the round trip of the 'accepted' ack before it.
            batch = list(self._outgoing)
            results = await asyncio.gather(
                *(client.publish(t, p, qos=q, retain=r) for t, p, q, r in batch),
                return_exceptions=True,
            )
            guard.check()
            for _ in batch:
                self._outgoing.popleft()
            failed = [(item, r) for item, r in zip(batch, results, strict=True) if r is not None]
            if failed:
                for item, _ in reversed(failed):  # send them again after reconnecting
                    self._outgoing.appendleft(item)
                error = failed[0][1]
                if isinstance(error, BaseException):
                    raise error
