"""``bci replay``, ``bci export-nwb`` and ``bci session``: recordings from the command line."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from acquisition.recording.recorder import RecordingError
from acquisition.recording.replay import (
    chunk_samples_for,
    replay_lsl,
    replay_offline,
    replay_outlet,
)
from acquisition.recording.sources import open_source
from bci.errors import BciError

SourceArg = Annotated[
    Path,
    typer.Argument(
        help="A session folder, SpikeInterface folder, .nwb or .xdf file.", show_default=False
    ),
]


#: Offline replay chunk (ms) when neither the option nor the config sets one.
OFFLINE_CHUNK_MS = 10.0


def _progress() -> Progress:
    from bci.cliutil import err_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def replay_command(
    recording: SourceArg,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config (acquisition: section used).")
    ],
    mode: Annotated[
        str,
        typer.Option("--mode", help="lsl: a paced LSL outlet; offline: straight into the stages."),
    ] = "offline",
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.0, help="LSL mode: times real time (0: unpaced)."),
    ] = 1.0,
    stream: Annotated[
        str | None, typer.Option("--stream", help="NWB series or XDF stream to replay.")
    ] = None,
    wait_consumer: Annotated[
        float,
        typer.Option("--wait-consumer", min=0.0, help="LSL mode: wait this long for a reader."),
    ] = 0.0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Offline mode: save the spikes (SPIKE_DTYPE .npy)."),
    ] = None,
    chunk_ms: Annotated[
        float | None,
        typer.Option(
            "--chunk-ms",
            min=0.01,
            help="Chunk length (default acquisition.chunk_ms when set, else 10 ms offline "
            "and 1 ms over LSL); the stages are chunking-invariant.",
        ),
    ] = None,
) -> None:
    """Replay a recording as a paced LSL outlet, or offline through the stages.

    LSL mode looks like a rig to any live consumer; offline mode runs the filter,
    detection and sorting stages as fast as possible, with a progress bar.
    """
    from acquisition.config import AcquisitionConfig
    from bci.cliutil import err_console, fail, load_or_exit, out_console

    if mode not in ("lsl", "offline"):
        raise fail(BciError(f"--mode must be lsl or offline, got {mode!r}"))
    cfg = load_or_exit(config)
    acq = cfg.acquisition or AcquisitionConfig()
    try:
        source = open_source(recording, stream=stream)
    except BciError as exc:
        raise fail(exc) from None
    except Exception as exc:  # readers of foreign formats raise many kinds
        raise fail(RecordingError(f"cannot open {recording}: {exc}")) from None
    if chunk_ms is None:
        # offline, nothing waits on a chunk: 10 ms chunks cost a tenth of the per-call
        # overhead, and the stages give the same spikes whatever the chunking
        explicit = "chunk_ms" in acq.model_fields_set
        chunk_ms = acq.chunk_ms if explicit or mode != "offline" else OFFLINE_CHUNK_MS
    step = chunk_samples_for(source, chunk_ms)
    err_console.print(
        f"replaying {source.name} ({source.kind}): {source.n_channels} channels at "
        f"{source.sample_rate:g} Hz, {source.duration_s:.2f} s, chunks of {step} samples",
        highlight=False,
    )
    try:
        if mode == "offline":
            _offline(source, acq, step, out, out_console)
        else:
            _lsl(source, acq, cfg.rig, step, speed, wait_consumer, out_console)
    except BciError as exc:
        raise fail(exc, code=1) from None
    finally:
        source.close()


def _offline(source: Any, acq: Any, step: int, out: Path | None, console: Any) -> None:
    from acquisition.pipeline import OnlinePipeline

    pipe = OnlinePipeline(acq, source.positions_um, source.sample_rate)
    pipe.warm_up()
    batches: list[np.ndarray] = []
    with _progress() as progress:
        task = progress.add_task("replay", total=source.n_samples, info="")

        def on_progress(done: int) -> None:
            if done % (step * 200) < step or done >= source.n_samples:
                n_spikes = sum(len(b) for b in batches)
                progress.update(task, completed=done, info=f"{n_spikes} spikes")

        stats = replay_offline(
            source,
            [pipe],
            chunk_samples=step,
            on_output=lambda _chunk, batch: batches.append(batch.spikes),
            on_progress=on_progress,
        )
        progress.update(task, completed=source.n_samples)
    pipe.close()
    spikes = np.concatenate(batches) if batches else np.zeros(0)
    n_units = pipe.sorter.n_units if pipe.sorter is not None else 0
    if out is not None:
        np.save(out, spikes)
    console.print(
        f"{stats.duration_s:.2f} s replayed in {stats.wall_s:.2f} s "
        f"(x{stats.realtime_factor:.1f} real time): {len(spikes)} spikes, {n_units} units"
        + (f" -> {out}" if out is not None else ""),
        highlight=False,
    )


def _lsl(
    source: Any,
    acq: Any,
    rig: str,
    step: int,
    speed: float,
    wait_consumer: float,
    console: Any,
) -> None:
    inlet = acq.inlet
    outlet = replay_outlet(
        source,
        name=inlet.name or "bci-replay",
        stream_type=inlet.type or "ExtracellularEphys",
        source_id=inlet.source_id or f"bci-{rig}-replay",
        chunk_samples=step,
    )
    console.print(
        f"LSL outlet {outlet.info.name()!r} (type {outlet.info.type()}, source id "
        f"{outlet.info.source_id()}) at x{speed:g}",
        highlight=False,
    )
    if wait_consumer > 0 and not outlet.wait_for_consumers(wait_consumer):
        console.print(f"no consumer after {wait_consumer:g} s; streaming anyway")
    stop = threading.Event()
    try:
        with _progress() as progress:
            task = progress.add_task("replay", total=source.n_samples, info="")
            stats = replay_lsl(
                source,
                outlet,
                chunk_samples=step,
                speed=speed,
                stop=stop,
                on_progress=lambda done: progress.update(task, completed=done),
            )
    except KeyboardInterrupt:
        stop.set()
        console.print("stopped (Ctrl-C)")
        return
    finally:
        outlet.close()
    console.print(
        f"{stats.samples} samples sent in {stats.wall_s:.2f} s (x{stats.realtime_factor:.2f} "
        f"real time), {stats.late_chunks} late chunks",
        highlight=False,
    )


def export_nwb_command(
    session: Annotated[Path, typer.Argument(help="Session folder.", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="NWB file (default SESSION.nwb).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    experimenter: Annotated[str | None, typer.Option(help="Last, First.")] = None,
    institution: Annotated[str | None, typer.Option()] = None,
    location: Annotated[
        str, typer.Option(help="Brain area of the electrodes (Allen CCF term, e.g. VISp).")
    ] = "unknown",
    subject_id: Annotated[str | None, typer.Option(help="Default: the rig name.")] = None,
    species: Annotated[str | None, typer.Option(help="Latin binomial, e.g. Mus musculus.")] = None,
    sex: Annotated[str, typer.Option(help="M, F, U or O.")] = "U",
    age: Annotated[str | None, typer.Option(help="ISO 8601 duration, e.g. P90D.")] = None,
) -> None:
    """Write SESSION as an NWB file: raw ElectricalSeries, electrodes, units, stim events."""
    from acquisition.recording.nwb import export_nwb
    from bci.cliutil import fail, out_console

    try:
        path = export_nwb(
            session,
            out,
            overwrite=overwrite,
            experimenter=experimenter,
            institution=institution,
            location=location,
            subject_id=subject_id,
            species=species,
            sex=sex,
            age=age,
        )
    except BciError as exc:
        raise fail(exc) from None
    out_console.print(f"wrote {path}", highlight=False)


def session_command(
    session: Annotated[Path, typer.Argument(help="Session folder.", show_default=False)],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Cut files back to their last flush; make SpikeInterface agree."
        ),
    ] = False,
    verify_all: Annotated[
        bool, typer.Option("--verify-all", help="Check every block's CRC32, not only the last.")
    ] = False,
    sorting_out: Annotated[
        Path | None,
        typer.Option(
            "--sorting-out", help="Write the sorted spikes as a SpikeInterface sorting folder."
        ),
    ] = None,
) -> None:
    """Check a session against its checksummed indexes; --repair fixes a crashed one.

    Prints a summary; exits 1 if a torn tail or a bad block was found and not repaired.
    """
    from acquisition.recording.session import Session
    from bci.cliutil import err_console, fail, out_console

    try:
        s = Session(session, verify="all" if verify_all else "tail")
        done = s.repair() if repair else []
        if done:
            s = Session(session, verify="all" if verify_all else "tail")
    except BciError as exc:
        raise fail(exc) from None
    out_console.print(json.dumps(s.summary(), indent=2), markup=False, highlight=False)
    if sorting_out is not None:
        s.sorting().save(folder=sorting_out, overwrite=True)
        err_console.print(f"sorting written to {sorting_out}", highlight=False)
    for line in done:
        err_console.print(f"[green]repaired:[/] {line}", highlight=False)
    if s.problems:
        for line in s.problems:
            err_console.print(f"[yellow]problem:[/] {line}", highlight=False)
        raise typer.Exit(1)
