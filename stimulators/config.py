"""Config models of the stimulation layer: ``mqtt:``, ``stimulation:`` and ``drivers:``.

Units are in the field names: ``_ua`` µA, ``_us`` µs, ``_ms`` ms, ``_s`` s, ``_hz`` Hz,
``_nc`` nC, ``_uc_cm2`` µC/cm², ``_um2`` µm², ``_mw`` mW, ``_c`` °C.

The environment variable ``BCI_MQTT_URL`` overrides the broker URL of any config
(see :func:`effective_mqtt`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_serializer, field_validator, model_validator

from bci.schema import StrictModel

__all__ = [
    "MQTT_URL_ENV",
    "BrokerAddress",
    "DriverConfig",
    "DryRunDriverConfig",
    "ElectricalDeviceConfig",
    "ElectrodeEnvelope",
    "MqttConfig",
    "MqttTlsConfig",
    "OpticalDeviceConfig",
    "OpticalSiteEnvelope",
    "SimElectricalDriverConfig",
    "SimOpticalDriverConfig",
    "StimDeviceConfig",
    "StimulationConfig",
    "effective_mqtt",
    "parse_mqtt_url",
]

MQTT_URL_ENV = "BCI_MQTT_URL"
_ID = r"^[A-Za-z0-9_\-]+$"

# ---------------------------------------------------------------- broker


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect: parsed from ``mqtt://user:secret@host:port``."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS).

    Raises ``ValueError`` naming what is wrong.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid MQTT URL: {exc}") from exc
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("MQTT URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("MQTT URL must not have a path, query or fragment")
    tls = parts.scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class MqttTlsConfig(StrictModel):
    """TLS to the broker. Files are PEM; ``insecure`` skips host-name verification."""

    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False


class MqttConfig(StrictModel):
    """The broker (``mqtt:`` section).

    ``url`` like ``mqtt://user:secret@127.0.0.1:1883`` (``mqtts://`` implies TLS);
    ``None`` means no broker is configured (the demo then starts an embedded one).
    ``protocol`` ``auto`` tries MQTT 5 and falls back to 3.1.1 if the broker refuses it.
    Reconnection uses jittered exponential backoff between ``reconnect_min_s`` and
    ``reconnect_max_s``. ``queue_size`` bounds the publisher's outgoing queue (oldest
    command dropped and counted when full).
    """

    url: str | None = None
    client_id: str | None = Field(None, pattern=_ID, max_length=64)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    tls: MqttTlsConfig | None = None
    keepalive_s: int = Field(5, ge=1, le=3600)
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    reconnect_min_s: float = Field(0.05, gt=0, le=60)
    reconnect_max_s: float = Field(2.0, gt=0, le=600)
    queue_size: int = Field(256, ge=1, le=1_000_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mqtt_url(value)
        return value

    @field_serializer("url")
    def _hide_password(self, value: str | None) -> str | None:
        return None if value is None else parse_mqtt_url(value).redacted()

    @model_validator(mode="after")
    def _backoff(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    def broker(self) -> BrokerAddress:
        """The parsed broker address (raises ``ValueError`` when no URL is configured)."""
        if self.url is None:
            raise ValueError(f"no MQTT broker configured (set mqtt.url or {MQTT_URL_ENV})")
        return parse_mqtt_url(self.url)


def effective_mqtt(config: MqttConfig | None) -> MqttConfig | None:
    """``config`` with its URL replaced by ``$BCI_MQTT_URL`` when that is set.

    Raises ``ValueError`` when the environment variable is not a valid MQTT URL.
    """
    url = os.environ.get(MQTT_URL_ENV)
    if not url:
        return config
    try:
        parse_mqtt_url(url)
    except ValueError as exc:
        raise ValueError(f"{MQTT_URL_ENV}: {exc}") from exc
    return (config or MqttConfig()).model_copy(update={"url": url})


# ---------------------------------------------------------------- safety envelopes

Material = Literal[
    "platinum",
    "platinum_iridium",
    "iridium_oxide",
    "titanium_nitride",
    "pedot",
    "stainless_steel",
    "other",
]

#: Conservative charge-injection limits per phase (µC/cm² of geometric area), from the
#: low end of the ranges in Merrill et al. 2005 and Cogan 2008. ``other`` has none.
MATERIAL_CHARGE_DENSITY_UC_CM2: dict[str, float | None] = {
    "platinum": 50.0,
    "platinum_iridium": 50.0,
    "iridium_oxide": 1000.0,
    "titanium_nitride": 870.0,
    "pedot": 1000.0,
    "stainless_steel": 40.0,
    "other": None,
}

#: Electrodes with a geometric area below this are microelectrodes (``scale: auto``).
MICRO_AREA_UM2 = 100_000.0


def _expand_ids(values: list[int | str]) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
            continue
        lo, sep, hi = v.partition("-")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise ValueError(f"electrode ids are integers or ranges like '0-31', got {v!r}")
        a, b = int(lo), int(hi)
        if b < a:
            raise ValueError(f"empty electrode range {v!r}")
        out.extend(range(a, b + 1))
    return out


class ElectrodeEnvelope(StrictModel):
    """Safety limits of a group of electrodes (``ids``: integers or ranges ``"0-31"``).

    Charge per phase is ``amplitude_ua * width_us / 1000`` nC. Microelectrodes (area
    below 100,000 µm² with ``scale: auto``) get a per-phase charge cap (default 4 nC);
    macroelectrodes the Shannon criterion ``log10(D) <= k - log10(Q)`` (D in µC/cm²,
    Q in µC per phase, k <= 1.85). Both get the material's charge-density limit.
    ``max_rate_hz`` bounds pulses in any 1 s window and ``charge_budget_nc_per_s``
    the charge of the first phases in any 1 s window (default: half of what
    ``max_rate_hz`` pulses at the per-phase limit would inject).
    """

    ids: list[int]
    material: Material = "platinum_iridium"
    geometric_area_um2: float = Field(gt=0, le=1e9)
    scale: Literal["auto", "micro", "macro"] = "auto"
    max_amplitude_ua: float = Field(100.0, gt=0, le=20_000)
    min_width_us: float = Field(20.0, gt=0)
    max_width_us: float = Field(1000.0, gt=0, le=100_000)
    max_interphase_gap_us: float = Field(1000.0, ge=0)
    max_frequency_hz: float = Field(200.0, gt=0, le=10_000)
    max_imbalance: float = Field(0.01, ge=0, le=0.01)
    max_charge_per_phase_nc: float | None = Field(None, gt=0)
    shannon_k: float = Field(1.85, gt=0, le=1.85)
    max_charge_density_uc_cm2: float | None = Field(None, gt=0)
    max_rate_hz: float = Field(200.0, gt=0, le=10_000)
    charge_budget_nc_per_s: float | None = Field(None, gt=0)

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        if isinstance(value, int | str):
            value = [value]
        if isinstance(value, list):
            ids = _expand_ids(value)
            if not ids or min(ids) < 0:
                raise ValueError("electrode ids must be >= 0 and at least one")
            if len(set(ids)) != len(ids):
                raise ValueError("electrode ids repeat")
            return ids
        return value

    @model_validator(mode="after")
    def _widths(self) -> ElectrodeEnvelope:
        if self.max_width_us < self.min_width_us:
            raise ValueError("max_width_us must be >= min_width_us")
        return self

    @property
    def is_micro(self) -> bool:
        if self.scale == "auto":
            return self.geometric_area_um2 < MICRO_AREA_UM2
        return self.scale == "micro"

    @property
    def area_cm2(self) -> float:
        return self.geometric_area_um2 * 1e-8

    @property
    def charge_density_limit_uc_cm2(self) -> float | None:
        if self.max_charge_density_uc_cm2 is not None:
            return self.max_charge_density_uc_cm2
        return MATERIAL_CHARGE_DENSITY_UC_CM2[self.material]

    @property
    def phase_charge_limit_nc(self) -> float:
        """The largest charge per phase (nC) any rule allows on this electrode."""
        limits = [self.max_amplitude_ua * self.max_width_us / 1000.0]
        if self.is_micro:
            limits.append(self.max_charge_per_phase_nc or 4.0)
        else:
            if self.max_charge_per_phase_nc is not None:
                limits.append(self.max_charge_per_phase_nc)
            # Shannon: Q^2 / A <= 10^k  (Q in µC, A in cm²)
            limits.append(1000.0 * (10.0**self.shannon_k * self.area_cm2) ** 0.5)
        density = self.charge_density_limit_uc_cm2
        if density is not None:
            limits.append(1000.0 * density * self.area_cm2)
        return min(limits)

    @property
    def charge_budget_limit_nc_per_s(self) -> float:
        if self.charge_budget_nc_per_s is not None:
            return self.charge_budget_nc_per_s
        return 0.5 * self.max_rate_hz * self.phase_charge_limit_nc


class ElectricalDeviceConfig(StrictModel):
    """A current stimulator (``kind: electrical``) named ``name`` and its electrodes.

    Every electrode a command may use must be listed; ``max_train_s`` bounds the length
    of one pulse train and ``max_pulses`` its pulse count.
    """

    kind: Literal["electrical"] = "electrical"
    name: str = Field(pattern=_ID, max_length=64)
    electrodes: list[ElectrodeEnvelope] = Field(min_length=1)
    max_train_s: float = Field(10.0, gt=0, le=60)
    max_pulses: int = Field(10_000, ge=1, le=1_000_000)
    max_electrodes_per_command: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _unique(self) -> ElectricalDeviceConfig:
        ids = [i for e in self.electrodes for i in e.ids]
        if len(set(ids)) != len(ids):
            raise ValueError("an electrode id appears in more than one envelope")
        return self


class OpticalSiteEnvelope(StrictModel):
    """Safety limits of one light source (fibre or µLED) named ``site``.

    ``max_power_mw`` at the emitter (default 10 mW). Heating is estimated from the
    average power over 1 s (times ``heating_1s_c_per_mw``: a 1 s burst reaches about
    half the steady-state rise) and over 60 s (times ``heating_c_per_mw``, the
    steady-state rise per mW); both must stay at most ``max_temperature_rise_c``
    (default 0.5 °C). One pulse lasts at most
    ``max_on_ms`` (continuous on-time) and the light is on at most ``max_duty_cycle``
    of any 60 s window.
    """

    site: str = Field(pattern=_ID, max_length=64)
    wavelength_nm: float | None = Field(None, gt=200, lt=2000)
    max_power_mw: float = Field(10.0, gt=0, le=1000)
    min_pulse_ms: float = Field(0.1, gt=0)
    max_on_ms: float = Field(1000.0, gt=0, le=600_000)
    max_frequency_hz: float = Field(100.0, gt=0, le=10_000)
    max_duty_cycle: float = Field(0.5, gt=0, le=1)
    heating_c_per_mw: float = Field(0.1, gt=0)
    heating_1s_c_per_mw: float = Field(0.05, gt=0)
    max_temperature_rise_c: float = Field(0.5, gt=0, le=5)

    @model_validator(mode="after")
    def _widths(self) -> OpticalSiteEnvelope:
        if self.max_on_ms < self.min_pulse_ms:
            raise ValueError("max_on_ms must be >= min_pulse_ms")
        return self


class OpticalDeviceConfig(StrictModel):
    """A light source driver (``kind: optical``) named ``name`` and its sites."""

    kind: Literal["optical"] = "optical"
    name: str = Field(pattern=_ID, max_length=64)
    sites: list[OpticalSiteEnvelope] = Field(min_length=1)
    max_train_s: float = Field(10.0, gt=0, le=60)
    max_pulses: int = Field(10_000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _unique(self) -> OpticalDeviceConfig:
        names = [s.site for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        return self


StimDeviceConfig = Annotated[
    ElectricalDeviceConfig | OpticalDeviceConfig, Field(discriminator="kind")
]


class StimulationConfig(StrictModel):
    """Stimulation devices with their envelopes, and the controller's timing.

    The controller publishes a heartbeat every ``heartbeat_interval_ms``; a driver that
    hears none for ``heartbeat_timeout_ms`` (default 500) stops all output. A command's
    deadline may lie at most ``max_deadline_s`` ahead of its sending time.
    """

    devices: list[StimDeviceConfig] = Field(min_length=1)
    heartbeat_interval_ms: float = Field(100.0, gt=0, le=60_000)
    heartbeat_timeout_ms: float = Field(500.0, gt=0, le=600_000)
    default_deadline_ms: float = Field(20.0, gt=0, le=60_000)
    max_deadline_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> StimulationConfig:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device names must be unique, got {names}")
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms:
            raise ValueError("heartbeat_timeout_ms must be longer than heartbeat_interval_ms")
        return self

    def device(self, name: str) -> ElectricalDeviceConfig | OpticalDeviceConfig:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


# ---------------------------------------------------------------- drivers


class _DriverBase(StrictModel):
    """Common options of every driver process.

    ``device`` names a device of the ``stimulation:`` section. ``require_controller``:
    commands are rejected unless a controller heartbeat is alive. ``max_payload_bytes``
    bounds an accepted command message. ``command_channel``: commands are read by a
    network thread of their own and stamped on arrival (lowest latency), instead of
    on the asyncio connection that carries the heartbeat, acks and status.
    ``ack_queue_size`` bounds the outgoing acks and the commands waiting to be handled.
    """

    device: str = Field(pattern=_ID, max_length=64)
    client_id: str | None = Field(None, pattern=_ID, max_length=64)
    require_controller: bool = True
    max_payload_bytes: int = Field(65_536, ge=1024, le=16_777_216)
    ack_queue_size: int = Field(1024, ge=1, le=1_000_000)
    command_channel: bool = True


class DryRunDriverConfig(_DriverBase):
    """Logs every command it would execute as one JSON line in ``log`` (relative to the
    current directory)."""

    kind: Literal["dryrun"] = "dryrun"
    log: Path = Path("stim_dryrun.jsonl")


class SimElectricalDriverConfig(_DriverBase):
    """Applies electrical commands to the simulated rig of the same process."""

    kind: Literal["sim_electrical"] = "sim_electrical"


class SimOpticalDriverConfig(_DriverBase):
    """Applies optical commands to the simulated rig of the same process."""

    kind: Literal["sim_optical"] = "sim_optical"


DriverConfig = Annotated[
    DryRunDriverConfig | SimElectricalDriverConfig | SimOpticalDriverConfig,
    Field(discriminator="kind"),
]
