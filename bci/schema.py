"""Base class and common field types for every config model.

Each configurable class has one pydantic model deriving from :class:`StrictModel`
(unknown keys are errors, values are validated, models are immutable). Families of
methods use discriminated unions on a ``kind`` field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Hz",
    "Milliseconds",
    "NonNegative",
    "Positive",
    "StrictModel",
    "resolve_path",
]


class StrictModel(BaseModel):
    """Base of every config model: ``extra="forbid"``, frozen, no NaN or infinity."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,
    )


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Hz = Annotated[float, Field(gt=0, description="frequency in Hz")]
Milliseconds = Annotated[float, Field(gt=0, description="duration in ms")]


def resolve_path(value: str | Path, context: object) -> Path:
    """Resolve a config file path against the config file's folder.

    ``context`` is the pydantic validation context (``info.context``); when it holds a
    ``base_dir`` a relative path is joined to it. The file must exist.
    """
    path = Path(value).expanduser()
    if not path.is_absolute() and isinstance(context, dict) and "base_dir" in context:
        path = Path(context["base_dir"]) / path
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return path
