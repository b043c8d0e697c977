"""The session folder: file names, SpikeInterface metadata, session metadata.

A session folder is at the same time a SpikeInterface *binary folder* (so
``spikeinterface.load(SESSION)`` opens the raw data without conversion) and our own
crash-safe record::

    SESSION/
      session.json                  metadata: rig, rate, channels, code version,
                                    resolved config, state (written atomically)
      config.yaml                   the resolved config (atomically)
      binary.json, si_folder.json   SpikeInterface's description of the raw files
      probegroup.json, probe.json   electrode geometry (probeinterface; probe.json for
                                    SpikeInterface < 0.105)
      traces_cached_seg{k}.raw      raw samples, float32 µV, (n_samples, n_channels) C order
      traces_cached_seg{k}.index.jsonl   one line per flushed block: offset, nbytes, crc32,
                                    first_sample, n_samples, timestamp (LSL s of its row 0)
      spikes.raw + spikes.index.jsonl    detected/sorted spikes (SPIKE_DTYPE records)
      ground_truth.raw + .index.jsonl    simulated rig's ground truth (GT_SPIKE_DTYPE)
      events.jsonl                  stim commands, acks and other events, one JSON per line,
                                    each with ``kind`` and ``time`` (LSL s)
      checkpoints/                  decoder checkpoints (decoders.checkpoint writes here)

Each rotation (by size, by time, or when the incoming samples are not contiguous,
e.g. after a dropped chunk) starts a new ``traces_cached_seg{k}.raw``; SpikeInterface
sees each file as one *segment* whose ``t_start`` is ``first_sample / rate`` (s since
the session's sample 0), so gaps stay visible.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording.blockfile import atomic_write_text

FORMAT = "bci-session"
FORMAT_VERSION = 1

SESSION_JSON = "session.json"
CONFIG_YAML = "config.yaml"
BINARY_JSON = "binary.json"
SI_FOLDER_JSON = "si_folder.json"
PROBEGROUP_JSON = "probegroup.json"
LEGACY_PROBE_JSON = "probe.json"
SPIKES_RAW = "spikes.raw"
SPIKES_INDEX = "spikes.index.jsonl"
GT_RAW = "ground_truth.raw"
GT_INDEX = "ground_truth.index.jsonl"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints"

SI_CLASS = "spikeinterface.core.binaryrecordingextractor.BinaryRecordingExtractor"
SI_FOLDER_CLASS = "spikeinterface.core.binaryfolder.BinaryFolderRecording"
#: the SpikeInterface version whose folder layout we write (0.105: probegroup.json)
SI_LAYOUT_VERSION = "0.105.3"


def segment_name(k: int) -> str:
    return f"traces_cached_seg{k}.raw"


def segment_index_name(k: int) -> str:
    return f"traces_cached_seg{k}.index.jsonl"


def code_version() -> str:
    """``git describe`` of the checkout this code runs from, else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"git:{described}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "bci-loop " + importlib.metadata.version("bci-loop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_binary_json(
    folder: Path,
    sample_rate: float,
    n_channels: int,
    channel_ids: Sequence[str],
    segments: Sequence[tuple[int, int]],
) -> None:
    """(Re)write ``binary.json`` and ``si_folder.json`` for ``segments``.

    ``segments`` holds ``(k, first_sample)`` for each segment file to expose, in order.
    """
    kwargs: dict[str, Any] = {
        "file_paths": [segment_name(k) for k, _ in segments],
        "sampling_frequency": float(sample_rate),
        "t_starts": [first / float(sample_rate) for _, first in segments],
        "num_channels": int(n_channels),
        "dtype": "<f4",
        "channel_ids": list(channel_ids),
        "time_axis": 0,
        "file_offset": 0,
        "gain_to_uV": [1.0] * n_channels,
        "offset_to_uV": [0.0] * n_channels,
        "is_filtered": False,
        "file_timestamps_paths": None,
    }
    binary = {
        "class": SI_CLASS,
        "module": "spikeinterface",
        "version": SI_LAYOUT_VERSION,
        "kwargs": kwargs,
        "annotations": {"is_filtered": False},
        "properties": {},
        "relative_paths": True,
    }
    si_folder = {
        "class": SI_FOLDER_CLASS,
        "module": "spikeinterface",
        "version": SI_LAYOUT_VERSION,
        "kwargs": {"folder_path": "."},
        "annotations": {"is_filtered": False},
        "properties": {},
        "relative_paths": True,
    }
    atomic_write_text(folder / BINARY_JSON, json.dumps(binary, indent=2))
    atomic_write_text(folder / SI_FOLDER_JSON, json.dumps(si_folder, indent=2))


def write_probegroup(folder: Path, positions_um: np.ndarray, probe: Any | None = None) -> None:
    """Write ``probegroup.json`` from a probeinterface ``Probe`` or from positions (µm)."""
    import probeinterface as pi

    if probe is None:
        probe = pi.Probe(ndim=2, si_units="um")
        probe.set_contacts(positions=np.asarray(positions_um, dtype=float)[:, :2])
    else:
        probe = probe.copy() if hasattr(probe, "copy") else probe
    n = probe.get_contact_count()
    probe.set_device_channel_indices(np.arange(n))
    group = pi.ProbeGroup()
    group.add_probe(probe)
    tmp = folder / f".{PROBEGROUP_JSON}.tmp"
    pi.write_probeinterface(tmp, group)
    text = tmp.read_text(encoding="utf-8")
    tmp.unlink(missing_ok=True)
    atomic_write_text(folder / PROBEGROUP_JSON, text)
    # SpikeInterface < 0.105 reads probe.json (same content; device indices in order)
    atomic_write_text(folder / LEGACY_PROBE_JSON, text)


def read_positions(folder: Path, n_channels: int) -> np.ndarray:
    """``(n_channels, 2)`` electrode positions (µm) from ``probegroup.json`` (zeros if none)."""
    path = folder / PROBEGROUP_JSON
    if not path.exists():
        return np.zeros((n_channels, 2))
    import probeinterface as pi

    group = pi.read_probeinterface(path)
    pos = np.concatenate([np.asarray(p.contact_positions)[:, :2] for p in group.probes])
    return pos.astype(np.float64)


def write_session_json(folder: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(folder / SESSION_JSON, json.dumps(meta, indent=2, default=str))


def read_session_json(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / SESSION_JSON).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{folder / SESSION_JSON} is not a {FORMAT} metadata file")
    return data
