"""Loading and validating whole config files.

A config file is YAML validated against :class:`BciConfig` before anything starts.
Any problem (missing file, YAML syntax, wrong type, unknown key, bad value, unknown
``kind``) raises :class:`~bci.errors.ConfigError` whose lines each name the file, the
field path and the bad value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from acquisition.config import AcquisitionConfig
from acquisition.recording.config import RecordingConfig
from acquisition.sim.config import SimRigConfig
from bci.errors import ConfigError
from bci.loop import LoopConfig
from bci.schema import StrictModel
from decoders.config import DecoderSection
from stimulators.config import DriverConfig, MqttConfig, StimulationConfig

M = TypeVar("M", bound=BaseModel)

_ID_PATTERN = r"^[A-Za-z0-9_\-]+$"


class BciConfig(StrictModel):
    """A whole experiment: which rig, and the sections each command needs.

    ``rig`` names the rig; it appears in LSL source ids and MQTT topics
    (``bci/{rig}/...``), so several rigs can share a network.
    """

    rig: str = Field(default="rig0", pattern=_ID_PATTERN, max_length=64)
    sim_rig: SimRigConfig | None = None
    acquisition: AcquisitionConfig | None = None
    decoders: DecoderSection | None = None
    mqtt: MqttConfig | None = None
    stimulation: StimulationConfig | None = None
    drivers: list[DriverConfig] = Field(default_factory=list)
    recording: RecordingConfig | None = None
    loop: LoopConfig | None = None

    @model_validator(mode="after")
    def _graph(self) -> BciConfig:
        """The whole pipeline hangs together: every policy's device is declared and
        reaches its electrodes or site; a sim_rig source has a sim_rig section."""
        if self.loop is None:
            return self
        if self.loop.source.kind == "sim_rig" and self.sim_rig is None:
            raise ValueError("loop.source is sim_rig but there is no sim_rig: section")
        devices = {d.name: d for d in self.stimulation.devices} if self.stimulation else {}
        for i, policy in enumerate(self.loop.policies):
            where = f"loop.policies[{i}]"
            device = devices.get(policy.device)
            if device is None:
                raise ValueError(
                    f"{where}.device: {policy.device!r} is not in stimulation.devices "
                    f"({sorted(devices)})"
                )
            cmd = policy.command
            if cmd.kind != device.kind:
                raise ValueError(
                    f"{where}.command: a {cmd.kind} command for the {device.kind} device "
                    f"{device.name!r}"
                )
            if cmd.kind == "electrical" and device.kind == "electrical":
                known = {e for env in device.electrodes for e in env.ids}
                missing = sorted(set(cmd.electrodes) - known)
                if missing:
                    raise ValueError(f"{where}.command.electrodes {missing} have no envelope")
            if cmd.kind == "optical" and device.kind == "optical":
                sites = {s.site for s in device.sites}
                if cmd.site not in sites:
                    raise ValueError(f"{where}.command.site {cmd.site!r} not in {sorted(sites)}")
        return self


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_problems(exc: ValidationError, source: str) -> list[str]:
    """One line per error: ``source: field.path: message (got value)``."""
    lines = []
    for err in exc.errors(include_url=False):
        # Discriminated unions put the tag in the location (e.g. populations[0].lif.tau_m);
        # keep it: it tells which kind was being validated.
        loc = _format_loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            lines.append(f"{source}: {loc}: {msg}")
        else:
            lines.append(f"{source}: {loc}: {msg} (got {_short(err.get('input'))})")
    return lines


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; raise :class:`ConfigError` on any problem."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}", file=str(p))
    if not p.is_file():
        raise ConfigError(f"config path is not a file: {p}", file=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", file=str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}", file=str(p)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections, got {type(data).__name__}",
            file=str(p),
        )
    return data


def validate(model: type[M], data: dict[str, Any], source: str, base_dir: Path | None = None) -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` naming ``source``.

    ``base_dir`` (passed to validators as ``info.context["base_dir"]``) is where relative
    file paths inside the config are resolved; default the current directory.
    """
    try:
        return model.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        problems = validation_problems(exc, source)
        raise ConfigError(
            f"invalid config {source}: {len(problems)} problem(s)",
            problems=problems,
            file=source,
        ) from exc


def load_config(path: str | Path, model: type[M] = BciConfig) -> M:  # type: ignore[assignment]
    """Read and validate a whole config file (default model :class:`BciConfig`).

    Relative file paths inside the config (edge lists, probe files) are resolved
    against the config file's folder by the models that hold them.
    """
    p = Path(path)
    data = read_yaml(p)
    return validate(model, data, str(p), base_dir=p.resolve().parent)


def dump_config(config: BaseModel) -> str:
    """The resolved config (defaults filled in) as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
