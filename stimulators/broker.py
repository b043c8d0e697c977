"""Brokers to run locally: an embedded amqtt broker (for the demo when no broker is
configured) and a Mosquitto process on a loopback port (for tests and benchmarks)."""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bci.errors import BciError
from stimulators.config import MqttConfig

__all__ = ["EmbeddedBroker", "MosquittoBroker", "free_port"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """An in-process amqtt broker (MQTT 3.1.1, anonymous) on ``host:port``.

    ``async with EmbeddedBroker() as broker:`` then connect to ``broker.url``. amqtt
    speaks MQTT 3.1.1 only; clients with ``protocol: auto`` fall back to it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def mqtt_config(self) -> MqttConfig:
        """An ``mqtt:`` section for this broker (MQTT 3.1.1, which amqtt speaks)."""
        return MqttConfig(url=self.url, protocol="3.1.1")

    async def __aenter__(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        # amqtt logs a failed start with its traceback; the error below says it in a line
        amqtt_log = logging.getLogger("amqtt.broker")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)
        try:
            await self._broker.start()
        except Exception as exc:
            raise BciError(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {exc}"
            ) from exc
        finally:
            amqtt_log.setLevel(level)
        logger.info("embedded MQTT broker on %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


class MosquittoBroker:
    """A ``mosquitto`` process on a loopback port with a generated config.

    ``start()`` returns once the port accepts connections (or raises after
    ``timeout_s``); ``stop()`` kills it; ``restart()`` does both on the same port.
    """

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(found).exists():
            raise BciError("mosquitto is not installed")
        self.binary = found
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bci-mosquitto-")
        self.config_path = Path(self._dir.name) / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            "max_queued_messages 1000\n"
            "log_dest none\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 5.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while True:  # poll the port until it accepts, within the deadline
            if self._proc.poll() is not None:
                raise BciError(f"mosquitto exited with {self._proc.returncode}", port=self.port)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BciError("mosquitto did not start", port=self.port) from None
                time.sleep(0.005)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
