"""Config models of the simulated rig (``sim_rig:`` section of a config file).

Units are in the field names: ``_um`` micrometres, ``_ms`` milliseconds, ``_hz``
hertz, ``_uv`` microvolts, ``_ua`` microamperes, ``_mw`` milliwatts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from acquisition.sim.neurons import NeuronParams
from bci.schema import StrictModel, resolve_path

# ---------------------------------------------------------------- probe geometry


class LinearProbe(StrictModel):
    """A silicon shank (or several): ``n_columns`` columns of contacts along depth (y).

    384 contacts in 2 columns at 20 µm pitch is a Neuropixels-like layout.
    """

    kind: Literal["linear"] = "linear"
    n_electrodes: int = Field(32, ge=1, le=4096, description="contacts in all")
    n_columns: int = Field(1, ge=1, le=8)
    pitch_um: float = Field(20.0, gt=0, description="vertical distance between contacts")
    column_pitch_um: float = Field(32.0, gt=0)
    n_shanks: int = Field(1, ge=1, le=16)
    shank_pitch_um: float = Field(250.0, gt=0)
    contact_radius_um: float = Field(6.0, gt=0)

    @model_validator(mode="after")
    def _divisible(self) -> LinearProbe:
        if self.n_electrodes % (self.n_columns * self.n_shanks):
            raise ValueError(
                f"n_electrodes ({self.n_electrodes}) must be a multiple of "
                f"n_columns * n_shanks ({self.n_columns * self.n_shanks})"
            )
        return self


class GridProbe(StrictModel):
    """A square multi-electrode array (MEA): ``n_rows`` x ``n_cols`` contacts."""

    kind: Literal["grid"] = "grid"
    n_rows: int = Field(8, ge=1, le=128)
    n_cols: int = Field(8, ge=1, le=128)
    pitch_um: float = Field(100.0, gt=0)
    contact_radius_um: float = Field(10.0, gt=0)


class ProbeFile(StrictModel):
    """A probe geometry from a probeinterface JSON file (relative to the config file)."""

    kind: Literal["file"] = "file"
    path: Path

    @field_validator("path", mode="after")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info.context)


ProbeConfig = Annotated[LinearProbe | GridProbe | ProbeFile, Field(discriminator="kind")]

# ---------------------------------------------------------------- neurons


class DriveConfig(StrictModel):
    """Background input to each neuron, in the model's current unit (pA for LIF, ...).

    ``mean`` is the tonic current (default: the model's ``default_drive``); each neuron
    gets ``mean * (1 + spread * N(0,1))``. On top, a fluctuating current of standard
    deviation ``noise_std``, redrawn independently per neuron every ``noise_interval_ms``
    and held in between (background synaptic bombardment, correlated over about a
    millisecond; redrawing every sample would cost one random number per neuron-step).
    """

    mean: float | None = None
    spread: float = Field(0.1, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0)
    noise_interval_ms: float = Field(1.0, gt=0, le=100)


class OpsinConfig(StrictModel):
    """Optogenetic expression: a fraction of the population carries a light-gated channel.

    Photocurrent = ``max_current`` * open fraction, in the model's current unit; the
    open fraction follows light with first-order kinetics (``tau_on_ms`` while lit,
    ``tau_off_ms`` after) and saturates as ``irradiance / (irradiance + half_sat_mw_mm2)``.
    """

    fraction: float = Field(1.0, ge=0, le=1)
    max_current: float | None = Field(None, description="default: 3x the model's default drive")
    tau_on_ms: float = Field(1.5, gt=0)
    tau_off_ms: float = Field(10.0, gt=0)
    half_sat_mw_mm2: float = Field(1.0, gt=0)


class PopulationConfig(StrictModel):
    """A group of neurons of one model, placed at random in the volume near the probe."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    count: int = Field(ge=1, le=200_000)
    model: NeuronParams
    excitatory: bool = True
    drive: DriveConfig = DriveConfig()
    stim_gain: float | None = Field(
        None, ge=0, description="model current per µA of cathodic electrode current at 0 µm"
    )
    opsin: OpsinConfig | None = None


class ConnectionConfig(StrictModel):
    """Random sparse synapses from population ``pre`` to ``post``.

    ``weight`` is in the post model's current unit (current-based synapses) or current
    unit per mV (conductance-based); the sign comes from whether ``pre`` is excitatory.
    Delays are drawn uniformly from ``delay_ms``.
    """

    pre: str
    post: str
    probability: float = Field(0.1, ge=0, le=1)
    weight: float = Field(ge=0)
    delay_ms: tuple[float, float] = (1.0, 3.0)

    @field_validator("delay_ms")
    @classmethod
    def _delays(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if lo <= 0 or hi < lo:
            raise ValueError("delay_ms must be (min, max) with 0 < min <= max")
        return value


class EdgeListConfig(StrictModel):
    """Synapses from a CSV edge list ``pre,post,weight,delay_ms`` (global neuron indices,
    negative weights inhibitory), resolved relative to the config file; a header line
    is allowed."""

    path: Path

    @field_validator("path", mode="after")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info.context)


class SynapseConfig(StrictModel):
    """Synapse dynamics shared by the network."""

    mode: Literal["current", "conductance"] = "current"
    tau_exc_ms: float = Field(5.0, gt=0)
    tau_inh_ms: float = Field(10.0, gt=0)
    e_exc_mv: float = 0.0
    e_inh_mv: float = -80.0


# ---------------------------------------------------------------- signal


class PlacementConfig(StrictModel):
    """Where neurons sit: uniformly in a box around the probe's contacts, ``margin_um``
    beyond them in x and y, and ``depth_um`` (min, max) away from the probe plane."""

    margin_um: float = Field(30.0, ge=0)
    depth_um: tuple[float, float] = (15.0, 60.0)


class WaveformConfig(StrictModel):
    """Extracellular spike waveforms: a trough then a slower positive phase.

    Peak amplitude per neuron is log-normal around ``amplitude_uv`` (at the soma);
    on an electrode at distance ``d`` it is scaled by ``1 / (1 + (d / r0_um)**2)``.
    Contacts whose amplitude falls below ``min_fraction`` of the neuron's peak are skipped.
    """

    duration_ms: float = Field(2.0, gt=0.3, le=10)
    trough_ms: float = Field(0.6, gt=0)
    amplitude_uv: float = Field(250.0, gt=0)
    amplitude_sigma: float = Field(0.35, ge=0, le=2)
    r0_um: float = Field(25.0, gt=0)
    min_fraction: float = Field(0.02, gt=0, lt=1)

    @model_validator(mode="after")
    def _trough_inside(self) -> WaveformConfig:
        if self.trough_ms >= self.duration_ms:
            raise ValueError("trough_ms must lie inside duration_ms")
        return self


class NoiseConfig(StrictModel):
    """Additive recording noise per channel (µV RMS): white thermal noise plus 1/f noise."""

    thermal_uv: float = Field(8.0, ge=0)
    pink_uv: float = Field(4.0, ge=0)


class ElectricalResponseConfig(StrictModel):
    """How tissue responds to current pulses on an electrode.

    A neuron at distance ``d`` receives ``stim_gain * I_cathodic / (1 + (d / r0_um)**2)``
    (only the depolarising, cathodic phase drives it). The recorded artifact on a contact
    at distance ``d`` is ``artifact_uv_per_ua * I / (1 + d / artifact_r0_um)``, clipped to
    ``±artifact_max_uv``, decaying with ``artifact_decay_ms`` after each phase.
    """

    r0_um: float = Field(60.0, gt=0)
    artifact_uv_per_ua: float = Field(40.0, ge=0)
    artifact_r0_um: float = Field(50.0, gt=0)
    artifact_decay_ms: float = Field(0.3, gt=0)
    artifact_max_uv: float = Field(3000.0, gt=0)


class OpticalSiteConfig(StrictModel):
    """A light source (fibre or µLED) at a position in the probe plane (µm) or at a contact."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    electrode: int | None = Field(None, ge=0)
    position_um: tuple[float, float] | None = None
    emitter_area_mm2: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _where(self) -> OpticalSiteConfig:
        if (self.electrode is None) == (self.position_um is None):
            raise ValueError("give exactly one of electrode or position_um")
        return self


class OpticalResponseConfig(StrictModel):
    """Light spread in tissue: irradiance at distance ``d`` falls as
    ``P / area * exp(-d / attenuation_um) / (1 + (d / spread_um)**2)``."""

    sites: list[OpticalSiteConfig] = Field(default_factory=list)
    attenuation_um: float = Field(200.0, gt=0)
    spread_um: float = Field(100.0, gt=0)


class StimResponseConfig(StrictModel):
    electrical: ElectricalResponseConfig = ElectricalResponseConfig()
    optical: OpticalResponseConfig = OpticalResponseConfig()


# ---------------------------------------------------------------- the rig


class StreamConfig(StrictModel):
    """The LSL outlets. ``source_id`` defaults to ``bci-{rig}-simrig`` (stable across runs)."""

    name: str = "SimRig"
    type: str = "ExtracellularEphys"
    source_id: str | None = None
    ground_truth: bool = True
    counter_channel: bool = Field(
        False, description="overwrite channel 0 with the absolute sample index (float32 exact)"
    )


class SimRigConfig(StrictModel):
    """A simulated rig: populations of model neurons next to a probe, recorded as µV."""

    sample_rate_hz: float = Field(30_000.0, ge=1_000, le=50_000)
    chunk_ms: float = Field(1.0, gt=0, le=1000, description="samples per LSL push")
    pacing: Literal["realtime", "fast"] = "realtime"
    seed: int = Field(0, ge=0)
    probe: ProbeConfig = LinearProbe()
    placement: PlacementConfig = PlacementConfig()
    populations: list[PopulationConfig] = Field(min_length=1)
    connections: list[ConnectionConfig] = Field(default_factory=list)
    edge_list: EdgeListConfig | None = None
    synapses: SynapseConfig = SynapseConfig()
    waveforms: WaveformConfig = WaveformConfig()
    noise: NoiseConfig = NoiseConfig()
    stimulation: StimResponseConfig = StimResponseConfig()
    stream: StreamConfig = StreamConfig()

    @model_validator(mode="after")
    def _references(self) -> SimRigConfig:
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names):
            raise ValueError(f"population names must be unique, got {names}")
        for i, c in enumerate(self.connections):
            for end in (c.pre, c.post):
                if end not in names:
                    raise ValueError(f"connections[{i}]: unknown population {end!r}; have {names}")
        if self.synapses.mode == "conductance":
            from acquisition.sim.neurons import model_class

            for p in self.populations:
                if not model_class(p.model.kind).voltage_in_mv:
                    raise ValueError(
                        f"population {p.name!r}: model {p.model.kind!r} has no membrane "
                        "potential in mV; use synapses.mode: current"
                    )
        return self

    @property
    def n_neurons(self) -> int:
        return sum(p.count for p in self.populations)

    @property
    def chunk_samples(self) -> int:
        return max(1, round(self.chunk_ms * self.sample_rate_hz / 1000.0))
