"""Export a session to NWB: raw data, electrodes, units and stimulation events.

The file holds, per raw segment, an ``ElectricalSeries`` in ``acquisition`` (the first
named ``ElectricalSeries``, later ones ``ElectricalSeries_seg{k}``; data int/float32 in
µV with ``conversion=1e-6`` to volts, streamed from disk in chunks), the electrode
table from the probe (``rel_x``/``rel_y`` in µm), a ``units`` table from the sorted
spikes (spike times in s), and the events as ``TimeIntervals``: ``stimulation``
(commands, acks and stimulus starts; kind, command id, sample and the JSON payload)
and ``recorder_events`` (gaps, drops, disk warnings). Times are seconds since the
session's absolute sample 0; LSL times are converted with the first block's
timestamp.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording.recorder import RecordingError
from acquisition.recording.session import Session

log = logging.getLogger(__name__)

#: Event kinds that go to the ``stimulation`` table (anything starting with ``stim``).
STIM_PREFIX = "stim"


def _chunk_iterator(session: Session, k: int) -> Any:
    from hdmf.data_utils import GenericDataChunkIterator

    class _SegmentIterator(GenericDataChunkIterator):
        def __init__(self) -> None:
            self._seg = session.read(k)
            rows = max(1, (4 << 20) // (4 * session.n_channels))
            super().__init__(
                buffer_shape=(min(rows * 8, max(1, self._seg.shape[0])), session.n_channels),
                chunk_shape=(min(rows, max(1, self._seg.shape[0])), session.n_channels),
                display_progress=False,
            )

        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(self._seg[selection])

        def _get_maxshape(self) -> tuple[int, int]:
            return (int(self._seg.shape[0]), session.n_channels)

        def _get_dtype(self) -> np.dtype:
            return np.dtype("float32")

    return _SegmentIterator()


def _details(ev: dict[str, Any]) -> str:
    skip = ("kind", "time", "command_id", "sample")
    return "; ".join(f"{k}={json.dumps(v, default=str)}" for k, v in ev.items() if k not in skip)


def export_nwb(
    folder: Path,
    out: Path | None = None,
    *,
    experimenter: str | None = None,
    institution: str | None = None,
    location: str = "unknown",
    subject_id: str | None = None,
    species: str | None = None,
    sex: str = "U",
    age: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``folder`` (a session) as an NWB file; return its path.

    ``out`` defaults to ``SESSION.nwb`` next to the session folder. Only verified data
    are exported (a crashed session is exported up to its last flush). The subject
    defaults to the rig name as ``subject_id`` (species, age and sex unknown unless
    given: ``species`` as a Latin binomial or NCBI taxonomy link, ``age`` in ISO 8601
    such as ``P90D`` (default ``P0D/``, an open range: unknown), ``sex`` one of M, F, U,
    O). ``location`` is the electrodes' brain area (an Allen CCF term such as ``VISp``
    keeps nwbinspector quiet). Without ``species`` (or ``location``) nwbinspector
    reports a best-practice violation and no error.
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.epoch import TimeIntervals
    from pynwb.file import Subject
    from pynwb.misc import Units

    session = Session(Path(folder))
    out = Path(out) if out is not None else session.folder.with_suffix(".nwb")
    if out.exists() and not overwrite:
        raise RecordingError(f"{out} exists (use overwrite)", path=str(out))
    meta = session.meta
    try:
        start = datetime.fromisoformat(str(meta.get("created_utc")))
    except ValueError:
        start = datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    fs = session.sample_rate
    nwb = NWBFile(
        session_description=(
            f"bci-loop session {session.folder.name} on rig {meta.get('rig')}: "
            f"{session.n_channels} channels at {fs:g} Hz"
        ),
        identifier=f"bci-{session.folder.name}-{meta.get('created_lsl_s', 0)}",
        session_start_time=start,
        experimenter=[experimenter] if experimenter else None,
        source_script=f"bci export-nwb ({session.code_version})",
        source_script_file_name="bci",
        experiment_description=(
            "closed-loop electrophysiology session recorded by bci-loop "
            f"({'simulated rig' if (session.config or {}).get('sim_rig') else 'live rig'})"
        ),
        keywords=["extracellular electrophysiology", "closed loop", "spike sorting"],
        institution=institution,
        subject=Subject(
            subject_id=subject_id or str(meta.get("rig", "unknown")),
            description="the recorded preparation (from the session's rig name)",
            species=species,
            sex=sex,
            age=age or "P0D/",
        ),
        notes=json.dumps(
            {
                "code_version": session.code_version,
                "state": session.state,
                "problems": session.problems,
                "config": session.config,
            },
            default=str,
        ),
    )
    device = nwb.create_device(name="probe", description="recording probe (bci-loop session)")
    group = nwb.create_electrode_group(
        name="probe",
        description="electrodes of the recording probe",
        location=location,
        device=device,
    )
    nwb.add_electrode_column(name="label", description="channel id in the session")
    pos = session.positions_um
    for i, label in enumerate(session.channel_ids):
        nwb.add_electrode(
            group=group,
            location=location,
            rel_x=float(pos[i, 0]),
            rel_y=float(pos[i, 1]),
            label=str(label),
        )
    region = nwb.create_electrode_table_region(
        region=list(range(session.n_channels)), description="all electrodes"
    )
    live = [s for s in session.segments if s.n_samples]
    if not live:
        raise RecordingError(f"{folder}: no verified samples to export", folder=str(folder))
    for j, seg in enumerate(live):
        name = "ElectricalSeries" if j == 0 else f"ElectricalSeries_seg{seg.k}"
        nwb.add_acquisition(
            ElectricalSeries(
                name=name,
                description=f"raw samples of {seg.path.name} (µV, conversion to V 1e-6)",
                data=_chunk_iterator(session, seg.k),
                electrodes=region,
                rate=fs,
                starting_time=seg.first_sample / fs,
                conversion=1e-6,
                filtering="none (raw)",
            )
        )
    spikes = session.spikes()
    sorted_spikes = spikes[spikes["unit"] >= 0]
    if len(sorted_spikes):
        nwb.units = Units(
            name="units",
            description="units sorted online by bci-loop",
            resolution=1.0 / fs,
            electrode_table=nwb.electrodes,
        )
        nwb.add_unit_column(name="peak_channel", description="electrode with most spikes")
        for unit in np.unique(sorted_spikes["unit"]):
            mine = sorted_spikes[sorted_spikes["unit"] == unit]
            times = np.sort(mine["sample"].astype(np.float64) / fs)
            peak = int(np.bincount(mine["channel"]).argmax())
            nwb.add_unit(
                spike_times=times,
                id=int(unit),
                peak_channel=peak,
                electrodes=[peak],
                electrode_group=group,
            )
    t_zero = session.lsl_time_of_sample0()

    def when(ev: dict[str, Any]) -> float:
        if "sample" in ev and isinstance(ev["sample"], int | float):
            return float(ev["sample"]) / fs
        return float(ev.get("time", t_zero)) - t_zero

    events = session.events()
    stim = [e for e in events if str(e.get("kind", "")).startswith(STIM_PREFIX)]
    other = [e for e in events if not str(e.get("kind", "")).startswith(STIM_PREFIX)]
    for table_name, rows, desc in (
        ("stimulation", stim, "stimulation commands, acks and stimulus starts"),
        ("recorder_events", other, "recorder and pipeline events (gaps, drops, disk)"),
    ):
        if not rows:
            continue
        table = TimeIntervals(name=table_name, description=desc)
        table.add_column(name="kind", description="event kind")
        table.add_column(name="command_id", description="stimulation command id, if any")
        table.add_column(name="sample", description="absolute sample index, -1 if none")
        table.add_column(name="details", description="the event's other fields, key=value; ...")
        for ev in sorted(rows, key=when):
            t = when(ev)
            dur = ev.get("duration_s")
            # an instantaneous event lasts one sample (NWB wants stop > start)
            stop = t + float(dur) if isinstance(dur, int | float) and dur > 0 else t + 1.0 / fs
            table.add_interval(
                start_time=t,
                stop_time=stop,
                kind=str(ev.get("kind")),
                command_id=str(ev.get("command_id", "")),
                sample=int(ev["sample"]) if isinstance(ev.get("sample"), int | float) else -1,
                details=_details(ev),
            )
        nwb.add_time_intervals(table)
    tmp = out.with_name(f".{out.stem}.tmp.nwb")
    with NWBHDF5IO(str(tmp), mode="w") as io:
        io.write(nwb)
    tmp.replace(out)
    log.info("exported %s to %s", session.folder, out)
    return out
