"""Config model of the recorder (the ``recording:`` section of a config file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from bci.schema import StrictModel


class RecordingConfig(StrictModel):
    """Where and how sessions are written.

    ``folder`` is the parent folder of session folders (relative paths are resolved
    against the config file's folder). Raw samples are flushed (written and
    ``fsync``-ed) once ``flush_interval_ms`` of data are pending, or after that long in
    wall time when data arrive slowly: at most that much data is at risk in a crash.
    A new segment file starts every ``rotate_mb`` MiB or ``rotate_s`` seconds of data,
    whichever comes first (``None`` disables either; the defaults, 16 GiB or one hour,
    rotate every 2.3 min at 1024 channels and 30 kHz, every 37 min at 64 channels);
    SpikeInterface sees each file as one segment. Below ``warn_free_mb`` of free disk
    space the recorder warns once; below ``stop_free_mb`` it stops cleanly and closes
    the session.
    ``queue_s`` bounds the data waiting for the writer thread (seconds of raw data);
    beyond it, chunks are dropped and counted.
    """

    folder: Path = Path("sessions")
    flush_interval_ms: float = Field(100.0, gt=0, le=60_000)
    rotate_mb: float | None = Field(16_384.0, gt=0)
    rotate_s: float | None = Field(3600.0, gt=0)
    warn_free_mb: float = Field(2048.0, ge=0)
    stop_free_mb: float = Field(256.0, ge=0)
    queue_s: float = Field(2.0, gt=0, le=600)
    record_spikes: bool = True
    record_events: bool = True

    @field_validator("folder")
    @classmethod
    def _resolve_folder(cls, value: Path, info: ValidationInfo) -> Path:
        path = Path(value).expanduser()
        ctx = info.context
        if not path.is_absolute() and isinstance(ctx, dict) and "base_dir" in ctx:
            path = Path(ctx["base_dir"]) / path
        return path

    @field_validator("stop_free_mb")
    @classmethod
    def _stop_below_warn(cls, value: float, info: ValidationInfo) -> float:
        warn = info.data.get("warn_free_mb")
        if warn is not None and value > warn:
            raise ValueError(f"stop_free_mb ({value}) must not exceed warn_free_mb ({warn})")
        return value
