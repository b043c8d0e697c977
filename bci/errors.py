"""One error hierarchy for the whole framework.

Every error carries a ``context`` dict (rig, device, field, value, ...) so that a
log line or an MQTT rejection can say exactly what went wrong. Raise with
``raise SomeError(...) from exc`` to keep the cause.
"""

from __future__ import annotations

from typing import Any


class BciError(Exception):
    """Base class of every error raised by this framework."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
        return f"{self.message} ({details})"


class ConfigError(BciError):
    """A configuration file is missing, unreadable or invalid.

    ``problems`` lists one line per invalid field: ``file: field.path: message (got value)``.
    """

    def __init__(self, message: str, *, problems: list[str] | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.problems = problems or []

    def __str__(self) -> str:
        # the message already names the file; each problem names its field and value
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  {p}" for p in self.problems)


class UnknownKindError(BciError, KeyError):
    """A registry was asked for a method (``kind``) it does not know."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return BciError.__str__(self)


class SimulationError(BciError):
    """The simulated rig was given something it cannot simulate."""


class StreamError(BciError):
    """An LSL stream could not be found, opened, or kept alive."""


class StreamFault(StreamError):
    """A stream delivered bad data (gap, duplicate, NaN, wrong shape, out-of-order time)."""


class SafetyViolation(BciError):
    """A stimulation command breaks the safety envelope; ``rule`` names the broken rule."""

    def __init__(self, message: str, *, rule: str, **context: Any) -> None:
        super().__init__(message, rule=rule, **context)
        self.rule = rule


class ProtocolError(BciError):
    """A message on the wire is malformed or of an unsupported schema version."""


class DeviceError(BciError):
    """A stimulation device or its driver failed."""


class CheckpointError(BciError):
    """A checkpoint could not be written, or is corrupt or truncated."""


class ServiceError(BciError):
    """A service failed to start, crashed, or exhausted its restart budget."""
