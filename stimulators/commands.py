"""The stimulation command protocol: commands and acknowledgements (JSON over MQTT).

Every command carries the schema version, a unique command id (UUID), the rig and
device, the cause (LSL-clock time and absolute sample index of the data that caused
it), and a deadline on the LSL clock (``bci.clock.now()`` seconds) after which it must
never be executed. Commands are discriminated on ``kind``.

Times are LSL-clock seconds; amplitudes µA; widths µs (electrical) or ms (optical);
power mW; frequency Hz.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from bci.clock import now
from bci.schema import StrictModel

__all__ = [
    "ACK_STATUSES",
    "SCHEMA_VERSION",
    "Ack",
    "AckStatus",
    "Cause",
    "Command",
    "ElectricalPulseTrain",
    "OpticalPulseTrain",
    "StopAll",
    "command_adapter",
    "new_command_id",
]

SCHEMA_VERSION: Literal[1] = 1
_ID = r"^[A-Za-z0-9_\-]+$"

# Sanity bounds of the wire format (the safety envelope is far tighter).
_MAX_UA = 1e6
_MAX_US = 1e7
_MAX_HZ = 1e6
_MAX_PULSES = 10_000_000


class Cause(StrictModel):
    """The data that caused a command: LSL-clock ``time`` (s) and absolute ``sample``."""

    time: float
    sample: int = Field(ge=0)


class _CommandBase(StrictModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: uuid.UUID
    rig: str = Field(pattern=_ID, max_length=64)
    device: str = Field(pattern=_ID, max_length=64)
    cause: Cause
    deadline: float = Field(description="LSL-clock time (s) after which it must not run")
    sent: float | None = Field(None, description="LSL-clock time (s) the publisher sent it")

    def expired(self, at: float | None = None) -> bool:
        return (now() if at is None else at) > self.deadline


class ElectricalPulseTrain(_CommandBase):
    """A train of biphasic current pulses on one or more electrodes.

    ``amplitudes_ua`` and ``widths_us`` of the first and second phase (magnitudes,
    µA and µs), ``interphase_gap_us`` between them, ``cathodic_first``; ``n_pulses``
    pulses at ``frequency_hz``.
    """

    kind: Literal["electrical"] = "electrical"
    electrodes: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        min_length=1, max_length=4096
    )
    amplitudes_ua: tuple[
        Annotated[float, Field(ge=0, le=_MAX_UA)], Annotated[float, Field(ge=0, le=_MAX_UA)]
    ]
    widths_us: tuple[
        Annotated[float, Field(gt=0, le=_MAX_US)], Annotated[float, Field(gt=0, le=_MAX_US)]
    ]
    interphase_gap_us: float = Field(0.0, ge=0, le=_MAX_US)
    cathodic_first: bool = True
    n_pulses: int = Field(1, ge=1, le=_MAX_PULSES)
    frequency_hz: float = Field(100.0, gt=0, le=_MAX_HZ)

    @model_validator(mode="after")
    def _distinct(self) -> ElectricalPulseTrain:
        if len(set(self.electrodes)) != len(self.electrodes):
            raise ValueError("electrodes repeat")
        return self

    @property
    def pulse_us(self) -> float:
        """Duration of one biphasic pulse (µs)."""
        return self.widths_us[0] + self.interphase_gap_us + self.widths_us[1]

    @property
    def duration_s(self) -> float:
        """From the start of the first pulse to the end of the last (s)."""
        return (self.n_pulses - 1) / self.frequency_hz + self.pulse_us * 1e-6

    @property
    def phase_charges_nc(self) -> tuple[float, float]:
        return (
            self.amplitudes_ua[0] * self.widths_us[0] / 1000.0,
            self.amplitudes_ua[1] * self.widths_us[1] / 1000.0,
        )


class OpticalPulseTrain(_CommandBase):
    """Light pulses from one optical ``site`` (fibre or LED id).

    ``power_mw`` at the emitter during each ``pulse_width_ms`` pulse, at
    ``frequency_hz`` for ``duration_ms`` (at least one pulse). ``wavelength_nm``, when
    given, must match the site's.
    """

    kind: Literal["optical"] = "optical"
    site: str = Field(pattern=_ID, max_length=64)
    wavelength_nm: float | None = Field(None, gt=0, le=1e5)
    power_mw: float = Field(ge=0, le=1e6)
    pulse_width_ms: float = Field(gt=0, le=1e7)
    frequency_hz: float = Field(gt=0, le=_MAX_HZ)
    duration_ms: float = Field(gt=0, le=1e8)

    @property
    def n_pulses(self) -> int:
        return max(1, math.floor(self.duration_ms * self.frequency_hz / 1000.0 + 1e-9))

    @property
    def duration_s(self) -> float:
        return (self.n_pulses - 1) / self.frequency_hz + self.pulse_width_ms / 1000.0


class StopAll(_CommandBase):
    """Stop all output of the device now."""

    kind: Literal["stop_all"] = "stop_all"


Command = Annotated[ElectricalPulseTrain | OpticalPulseTrain | StopAll, Field(discriminator="kind")]

#: Validates a command from a JSON string/bytes or a dict.
command_adapter: TypeAdapter[ElectricalPulseTrain | OpticalPulseTrain | StopAll] = TypeAdapter(
    Command
)

AckStatus = Literal["accepted", "executed", "rejected", "expired", "duplicate"]
ACK_STATUSES: tuple[str, ...] = ("accepted", "executed", "rejected", "expired", "duplicate")


class Ack(StrictModel):
    """A driver's answer about one command, on ``bci/{rig}/stim/{device}/ack``.

    ``command_id`` is ``None`` only when the payload was too broken to find one.
    ``received``: LSL time the driver got the message; ``executed_at``: LSL time output
    began (status ``executed``); ``start_sample``: the rig's absolute sample index the
    stimulus starts at, when the device knows it. A rejection names its ``rule`` and the
    ``values`` that broke it; malformed payloads are rejected with a ``protocol.*`` rule.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: uuid.UUID | None
    rig: str
    device: str
    driver: str
    status: AckStatus
    received: float
    time: float = Field(description="LSL time the ack was made")
    executed_at: float | None = None
    start_sample: int | None = None
    rule: str | None = None
    message: str | None = None
    values: dict[str, Any] | None = None
    cause: Cause | None = None
    sent: float | None = None


def new_command_id() -> uuid.UUID:
    """A random (version 4) UUID, from the interpreter's generator rather than the
    operating system's: ``uuid.uuid4()`` makes a system call, 25 µs on the hot path
    once its code has left the cache. Ids only need to be unique, and this generator
    is seeded from the system's entropy in each process (forked children reseed)."""
    return uuid.UUID(int=random.getrandbits(128), version=4)
