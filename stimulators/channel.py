"""A low-latency MQTT connection for stimulation commands, driven by its own thread.

The asyncio side of the stimulation layer (aiomqtt: acks, status, heartbeats) costs
several event-loop iterations per message, and each iteration must win the
interpreter from whatever else the process is doing (the hot path, the simulated
rig). Measured on the 2-core test machine, that put 1.2-1.7 ms between a controller's
publish and a driver's receipt. Commands are the one message on the latency budget,
so they travel on a :class:`CommandChannel` instead:

* :meth:`CommandChannel.publish` may be called from any thread (the hot path calls it
  directly) and writes the packet to the socket before it returns;
* incoming messages are handed to ``on_message`` in the channel's network thread the
  moment they are read, stamped with the LSL-clock time of the read.

It is paho-mqtt in its "external loop" mode: the channel owns the only thread that
reads, a lock serialises every socket write (so packets leave in call order), and
the network thread reconnects with the same jittered exponential backoff as
:func:`stimulators.mqtt.connection_loop`, restoring its subscriptions. QoS 1 messages
whose acknowledgement a disconnection cut off are sent again by paho after it
reconnects (the receiving driver executes each command id at most once).
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bci.clock import now
from stimulators.config import MqttConfig

__all__ = ["CommandChannel", "OnMessage"]

logger = logging.getLogger(__name__)

#: ``on_message(topic, payload, received)``: ``received`` is the LSL time of the read.
OnMessage = Callable[[str, bytes, float], None]

_POLL_S = 0.05  # the network thread's longest sleep (keepalive, stop, reconnect checks)


class _Packed(Properties):
    """MQTT 5 properties packed once, by :meth:`freeze`, and never changed after."""

    _packed: bytes | None = None

    def freeze(self) -> None:
        object.__setattr__(self, "_packed", super().pack())  # paho vets property names

    def pack(self) -> bytes:
        return super().pack() if self._packed is None else self._packed


class CommandChannel:
    """One MQTT connection whose reads and writes never wait for an event loop.

    ``protocol`` is ``"5"`` or ``"3.1.1"`` (the caller has settled it on its asyncio
    connection). ``subscriptions`` are ``(topic filter, qos)`` pairs, restored on every
    connection. ``resume``: after the first connection, resume the broker session
    (MQTT 5: kept 60 s), so QoS 1 messages sent while away are delivered on return.
    ``will``: ``(topic, payload, qos, retain)`` published by the broker if the channel
    drops without a clean close.

    Use as ``with CommandChannel(...) as ch:`` or call :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        protocol: str,
        subscriptions: tuple[tuple[str, int], ...] = (),
        on_message: OnMessage | None = None,
        resume: bool = False,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {protocol!r}")
        self.config = config
        self.client_id = client_id
        self.v5 = protocol == "5"
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.resume = resume
        self.connected = threading.Event()
        self.connections = 0
        self.published = 0
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tried = False  # connect() once, reconnect() after
        self._suback_mid: int | None = None
        self._publisher: int | None = None  # thread inside publish(), under the lock
        self._expiry_props: dict[int, Properties] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._client = self._make_client(will)

    # ------------------------------------------------------------ set-up

    def _make_client(self, will: tuple[str, bytes, int, bool] | None) -> paho.Client:
        broker = self.config.broker()
        protocol = paho.MQTTv5 if self.v5 else paho.MQTTv311
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            # MQTT 3.1.1 has no session expiry: a kept session would outlive this
            # process and hand a new one stale commands, so 3.1.1 never resumes
            clean_session=None if self.v5 else True,
            reconnect_on_failure=False,  # the network thread reconnects, with backoff
        )
        client.connect_timeout = self.config.connect_timeout_s
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls or self.config.tls is not None:
            t = self.config.tls
            client.tls_set(
                ca_certs=str(t.ca_certs) if t and t.ca_certs else None,
                certfile=str(t.certfile) if t and t.certfile else None,
                keyfile=str(t.keyfile) if t and t.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(bool(t and t.insecure))
        if will is not None:
            topic, payload, qos, retain = will
            client.will_set(topic, payload, qos=qos, retain=retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        # external-loop mode: paho never writes from inside publish(); we do, under a lock
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = lambda *_: None
        return client

    def _on_register_write(self, *_: Any) -> None:
        # a packet was queued: the network thread writes it, unless it is publish()'s own
        # packet, which publish() writes at once (waking the network thread then would
        # only make it queue for the interpreter behind the publishing thread)
        if self._publisher != threading.get_ident():
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("command channel %s: connection refused: %s", self.client_id, reason)
            return
        self.connections += 1
        if not self.subscriptions:
            self._up()
            return
        # usable once the broker has granted every subscription: a peer that hears
        # "ready" from this process must not publish into a subscription not yet made
        _, mid = client.subscribe(list(self.subscriptions))
        self._suback_mid = mid

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        if mid != self._suback_mid:
            return
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            logger.error("command channel %s: subscription refused: %s", self.client_id, failed)
            return
        self._up()

    def _up(self) -> None:
        self.connected.set()
        logger.info("command channel %s: connected", self.client_id)

    def _on_disconnect(self, *_: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        received = now()
        if self.on_message is None:
            return
        try:
            self.on_message(message.topic, bytes(message.payload), received)
        except Exception:
            logger.exception("command channel %s: message handler failed", self.client_id)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> CommandChannel:
        """Start the network thread; it connects (and reconnects) in the background."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"mqtt-channel-{self.client_id}", daemon=True
            )
            self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._write_lock:
            if self._client.socket() is not None:
                self._client.disconnect()
                self._client.loop_write()
        self.connected.clear()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> CommandChannel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ publishing

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, expiry_s: int | None = None
    ) -> bool:
        """Send ``payload`` now, from the calling thread; ``False`` when not connected
        (nothing is queued: the caller decides what to do with it)."""
        if not self.connected.is_set():
            return False
        props = None
        if self.v5 and expiry_s is not None:
            props = self._expiry(max(1, int(expiry_s)))
        with self._write_lock:
            self._publisher = threading.get_ident()
            try:
                info = self._client.publish(topic, payload, qos=qos, retain=False, properties=props)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    return False
                self._client.loop_write()
                leftover = self._client.want_write()  # the socket was full: rare
            finally:
                self._publisher = None
        if leftover:
            self._wake()
        self.published += 1
        return True

    def _expiry(self, seconds: int) -> Properties:
        """PUBLISH properties with a message expiry (built and packed once per value:
        paho would pack them again on each publish, which costs more than the rest of
        the packet)."""
        props = self._expiry_props.get(seconds)
        if props is None:
            props = _Packed(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = seconds
            props.freeze()
            if len(self._expiry_props) < 64:
                self._expiry_props[seconds] = props
        return props

    # ------------------------------------------------------------ network thread

    def _connect(self) -> bool:
        try:
            if not self._tried:
                self._tried = True
                broker = self.config.broker()
                kwargs: dict[str, Any] = {}
                if self.v5:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = 60 if self.resume else 0
                    kwargs["properties"] = props
                    # a fresh session for this process, resumed after a disconnection
                    kwargs["clean_start"] = (
                        paho.MQTT_CLEAN_START_FIRST_ONLY if self.resume else True
                    )
                self._client.connect(
                    broker.host, broker.port, keepalive=self.config.keepalive_s, **kwargs
                )
            else:
                self._client.reconnect()
        except (OSError, ssl.SSLError, ValueError) as exc:
            logger.warning("command channel %s: cannot connect: %s", self.client_id, exc)
            return False
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._write_lock:
            self._client.loop_write()  # the CONNECT packet
        return True

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self._client.socket() is None:
                if self._connect():
                    attempt = 0
                else:
                    delay = min(
                        self.config.reconnect_max_s, self.config.reconnect_min_s * 2**attempt
                    )
                    attempt = min(attempt + 1, 30)
                    self._stop.wait(random.uniform(delay / 2, delay))  # backoff timer
                    continue
            self._serve_once()

    def _serve_once(self) -> None:
        sock = self._client.socket()
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock, self._wake_r], [], [], _POLL_S)
        except (OSError, ValueError):  # the socket was closed under us
            self.connected.clear()
            return
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if sock in readable:
            rc = self._client.loop_read()
            pending = getattr(sock, "pending", None)  # TLS: decrypted bytes already buffered
            while rc == paho.MQTT_ERR_SUCCESS and pending is not None and pending() > 0:
                rc = self._client.loop_read()
            if rc != paho.MQTT_ERR_SUCCESS:
                self._lost(f"read: {paho.error_string(rc)}")
                return
        with self._write_lock:
            wrc = self._client.loop_write() if self._client.want_write() else None
        if wrc:
            self._lost(f"write: {paho.error_string(wrc)}")
            return
        if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:  # keepalive ping and its timeout
            self._lost("keepalive timed out")

    def _lost(self, why: str) -> None:
        if self.connected.is_set():
            logger.warning("command channel %s: connection lost (%s)", self.client_id, why)
        self.connected.clear()  # paho has closed the socket: the loop reconnects
