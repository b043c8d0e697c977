"""``bci sort RECORDING``: run the online stages over a recording as fast as possible.

Reads a SpikeInterface recording folder (a binary folder, or anything
``spikeinterface.load`` opens; the simulated rig records in that format), streams it
through the same filter -> detect -> sort stages the real-time path uses, and writes a
sorting folder that ``spikeinterface.load(DIR)`` returns.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from acquisition.config import AcquisitionConfig
from acquisition.pipeline import OnlinePipeline
from bci.config import BciConfig, load_config
from bci.errors import BciError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sort.yaml"


def load_acquisition_config(path: Path | None) -> AcquisitionConfig:
    """The ``acquisition:`` section of ``path`` (or of ``configs/sort.yaml``, or defaults)."""
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return AcquisitionConfig()
        path = DEFAULT_CONFIG
    cfg: BciConfig = load_config(path)
    section = getattr(cfg, "acquisition", None)
    if section is None:
        return AcquisitionConfig()
    if not isinstance(section, AcquisitionConfig):  # pragma: no cover - schema guarantees it
        raise ConfigError(f"{path}: acquisition section has the wrong type", file=str(path))
    return section


def open_recording(path: Path) -> Any:
    """Open a SpikeInterface recording folder; raise :class:`BciError` if it is not one."""
    try:
        import spikeinterface.core as sc
    except ImportError as exc:
        raise BciError("bci sort needs spikeinterface: pip install '.[sort]'") from exc
    if not path.exists():
        raise BciError(f"recording not found: {path}", path=str(path))
    try:
        rec = sc.load(path)
    except Exception as exc:  # spikeinterface raises many kinds for a bad folder
        raise BciError(f"cannot read recording {path}: {exc}", path=str(path)) from exc
    if not isinstance(rec, sc.BaseRecording):
        raise BciError(f"{path} holds a {type(rec).__name__}, not a recording", path=str(path))
    return rec


def sort_recording(
    recording: Any,
    config: AcquisitionConfig,
    *,
    chunk_ms: float | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stream ``recording`` (segment 0) through the online pipeline.

    Returns the spikes (:data:`~bci.types.SPIKE_DTYPE`, all of them, unit -1 included)
    and a summary dict.
    """
    from bci.types import Chunk, empty_spikes

    fs = float(recording.get_sampling_frequency())
    positions = np.asarray(recording.get_channel_locations(), dtype=np.float64)[:, :2]
    pipe = OnlinePipeline(config, positions, fs)
    pipe.warm_up()
    n_total = int(recording.get_num_samples(0))
    step = max(1, round((chunk_ms or config.chunk_ms) * fs / 1000.0))
    scaled = bool(recording.has_scaleable_traces())
    batches = []
    task = progress.add_task("sorting", total=n_total) if progress is not None else None
    t0 = time.perf_counter()
    for start in range(0, n_total, step):
        stop = min(n_total, start + step)
        traces = recording.get_traces(
            segment_index=0, start_frame=start, end_frame=stop, return_in_uV=scaled
        )
        chunk = Chunk(np.ascontiguousarray(traces, dtype=np.float32), start, start / fs, fs)
        batches.append(pipe.process(chunk).spikes)
        if progress is not None and task is not None:
            progress.update(task, completed=stop)
    wall = time.perf_counter() - t0
    pipe.close()
    spikes: np.ndarray = np.concatenate(batches) if batches else empty_spikes()
    sorter = pipe.sorter
    summary = {
        "duration_s": n_total / fs,
        "wall_s": wall,
        "realtime_factor": (n_total / fs) / wall if wall > 0 else float("inf"),
        "n_spikes": len(spikes),
        "n_sorted": int((spikes["unit"] >= 0).sum()) if len(spikes) else 0,
        "n_units": sorter.n_units if sorter is not None else 0,
        "learning_s": config.sorter.learning_s,
        "filter_delay_samples": pipe.delay_samples,
    }
    return spikes, summary


def write_sorting(spikes: np.ndarray, sample_rate: float, out: Path, n_units: int) -> Any:
    """Write the labelled spikes as a SpikeInterface sorting folder at ``out``."""
    import spikeinterface.core as sc

    keep = spikes[spikes["unit"] >= 0]
    order = np.argsort(keep["sample"], kind="stable")
    keep = keep[order]
    sorting = sc.NumpySorting.from_samples_and_labels(
        [keep["sample"].astype(np.int64)],
        [keep["unit"].astype(np.int64)],
        sample_rate,
        unit_ids=np.arange(n_units),
    )
    with warnings.catch_warnings():
        # a NumpySorting has no provenance to record; spikeinterface warns about it
        warnings.filterwarnings("ignore", message="The extractor is not serializable")
        return sorting.save(folder=out, overwrite=True)


def sort_command(
    recording: Annotated[
        Path, typer.Argument(help="SpikeInterface recording folder.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sorting folder to write.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config with an acquisition: section."),
    ] = None,
    chunk_ms: Annotated[
        float | None, typer.Option("--chunk-ms", min=0.01, help="Chunk length fed to the stages.")
    ] = None,
) -> None:
    """Sort RECORDING with the online stages, as fast as possible; write a sorting to OUT."""
    from bci.cliutil import err_console, fail, out_console

    try:
        cfg = load_acquisition_config(config)
        rec = open_recording(recording)
    except BciError as exc:
        raise fail(exc) from None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    fs = float(rec.get_sampling_frequency())
    duration_s = rec.get_num_samples(0) / fs
    learning_s = cfg.sorter.learning_s
    if duration_s <= learning_s:
        err_console.print(
            f"[yellow]warning:[/] the recording lasts {duration_s:.1f} s, no longer than the "
            f"sorter's learning period ({learning_s:g} s): no spike will be labelled. Give "
            "a --config with a shorter acquisition.sorter.learning_s.",
            highlight=False,
        )
    with Progress(*columns, console=err_console, transient=False) as progress:
        spikes, summary = sort_recording(rec, cfg, chunk_ms=chunk_ms, progress=progress)
    write_sorting(spikes, fs, out, summary["n_units"])
    (out / "bci_sort.json").write_text(
        json.dumps({"summary": summary, "config": cfg.model_dump(mode="json")}, indent=2)
    )
    out_console.print(
        f"{summary['n_units']} units, {summary['n_sorted']} of {summary['n_spikes']} spikes "
        f"labelled, {summary['duration_s']:.1f} s of data in {summary['wall_s']:.1f} s "
        f"(x{summary['realtime_factor']:.1f} real time) -> {out}",
        highlight=False,
    )
