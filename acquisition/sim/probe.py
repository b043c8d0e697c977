"""Probe geometry for the simulated rig, as a probeinterface ``Probe``.

Contacts lie in the probe plane (x, y in µm); neurons sit at a depth z in front of it.
"""

from __future__ import annotations

import numpy as np
import probeinterface as pi

from acquisition.sim.config import GridProbe, LinearProbe, ProbeConfig, ProbeFile
from bci.errors import ConfigError


def build_probe(config: ProbeConfig) -> pi.Probe:
    """Build the probe described by ``config`` (contact ids ``e0``, ``e1``, ...)."""
    if isinstance(config, LinearProbe):
        probe = _linear(config)
    elif isinstance(config, GridProbe):
        probe = pi.generate_multi_columns_probe(
            num_columns=config.n_cols,
            num_contact_per_column=config.n_rows,
            xpitch=config.pitch_um,
            ypitch=config.pitch_um,
            contact_shapes="circle",
            contact_shape_params={"radius": config.contact_radius_um},
        )
    elif isinstance(config, ProbeFile):
        probe = _from_file(config)
    else:  # pragma: no cover - the config union is closed
        raise ConfigError(f"unknown probe kind {config!r}")
    n = probe.get_contact_count()
    if probe.contact_ids is None or not all(probe.contact_ids):
        probe.set_contact_ids([f"e{i}" for i in range(n)])
    probe.set_device_channel_indices(np.arange(n))
    return probe


def _linear(config: LinearProbe) -> pi.Probe:
    per_shank = config.n_electrodes // config.n_shanks
    per_column = per_shank // config.n_columns
    shank = pi.generate_multi_columns_probe(
        num_columns=config.n_columns,
        num_contact_per_column=per_column,
        xpitch=config.column_pitch_um,
        ypitch=config.pitch_um,
        contact_shapes="circle",
        contact_shape_params={"radius": config.contact_radius_um},
    )
    if config.n_shanks == 1:
        return shank
    positions = np.concatenate(
        [
            shank.contact_positions + np.array([k * config.shank_pitch_um, 0.0])
            for k in range(config.n_shanks)
        ]
    )
    probe = pi.Probe(ndim=2, si_units="um")
    probe.set_contacts(
        positions=positions,
        shapes="circle",
        shape_params={"radius": config.contact_radius_um},
        shank_ids=np.repeat([str(k) for k in range(config.n_shanks)], per_shank),
    )
    return probe


def _from_file(config: ProbeFile) -> pi.Probe:
    try:
        group = pi.read_probeinterface(config.path)
    except Exception as exc:  # probeinterface raises many types for a bad file
        raise ConfigError(
            f"cannot read probe file {config.path}: {exc}", file=str(config.path)
        ) from exc
    probes = group.probes
    if len(probes) != 1:
        raise ConfigError(
            f"probe file {config.path} holds {len(probes)} probes; the simulated rig takes one",
            file=str(config.path),
        )
    probe = probes[0]
    if probe.ndim != 2:
        probe = probe.to_2d()
    return probe


def electrode_positions(probe: pi.Probe) -> np.ndarray:
    """``(n_electrodes, 2)`` contact positions in µm, in channel order."""
    return np.asarray(probe.contact_positions, dtype=np.float64)
