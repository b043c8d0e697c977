"""The dry-run driver: logs every command it would execute, one JSON line each."""

from __future__ import annotations

import json
from typing import IO, Any

from bci.clock import now
from stimulators.commands import ElectricalPulseTrain, OpticalPulseTrain
from stimulators.config import DryRunDriverConfig
from stimulators.drivers.base import Driver, Execution

__all__ = ["DryRunDriver"]


class DryRunDriver(Driver):
    """Writes ``{"time", "event", "command"}`` JSON lines to ``spec.log`` instead of
    driving hardware (``event`` is ``execute`` or ``stop``; ``time`` is LSL seconds).
    Accepts electrical and optical commands, checked against the device's envelope."""

    kind = "dryrun"

    def __init__(self, spec: DryRunDriverConfig, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.log_path = spec.log
        self._file: IO[str] | None = None

    async def open(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log_path.open("a", encoding="utf-8")

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _log(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.log_path.open("a", encoding="utf-8")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    async def execute(self, command: ElectricalPulseTrain | OpticalPulseTrain) -> Execution:
        t = now()
        self._log({"time": t, "event": "execute", "command": command.model_dump(mode="json")})
        return Execution(time=t)

    async def stop_output(self) -> None:
        self._log({"time": now(), "event": "stop", "device": self.device.name})
