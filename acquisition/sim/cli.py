"""``bci sim-rig``: run a simulated rig and stream it over LSL."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from acquisition.sim.rig import SimulatedRig, warm_up
from acquisition.sim.streamer import RigStreamer, StreamStats
from bci.cliutil import ConfigArg, err_console, fail, load_or_exit, out_console
from bci.errors import BciError, ConfigError


def sim_rig(
    config: ConfigArg,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            "-d",
            min=0.001,
            help="Simulated seconds to stream; default: until Ctrl-C.",
        ),
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="As fast as possible instead of real-time pacing.")
    ] = False,
    seed: Annotated[int | None, typer.Option(min=0, help="Override the config's seed.")] = None,
) -> None:
    """Run the simulated rig of CONFIG and stream it over LSL until stopped or for --duration."""
    cfg = load_or_exit(config)
    if cfg.sim_rig is None:
        raise fail(ConfigError(f"{config}: no 'sim_rig' section; nothing to simulate"))
    rig_cfg = cfg.sim_rig
    updates: dict[str, object] = {}
    if fast:
        updates["pacing"] = "fast"
    if seed is not None:
        updates["seed"] = seed
    if updates:
        rig_cfg = rig_cfg.model_copy(update=updates)
    try:
        warm_up(rig_cfg)
        rig = SimulatedRig(rig_cfg)
        streamer = RigStreamer(rig, cfg.rig)
    except BciError as exc:
        raise fail(exc) from None
    err_console.print(
        f"streaming [bold]{rig_cfg.stream.name}[/] (source id {streamer.source_id}): "
        f"{rig.n_channels} channels at {rig.sample_rate_hz:g} Hz, {rig.n_neurons} neurons, "
        f"{rig_cfg.pacing} pacing",
        highlight=False,
    )
    streamer.start(duration)
    try:
        _show_progress(streamer, duration)
    except KeyboardInterrupt:
        err_console.print("stopping (Ctrl-C)")
    finally:
        streamer.stop()
        try:
            stats = streamer.join()
        except BciError as exc:
            raise fail(exc, code=1) from None
        finally:
            streamer.close()
    _print_summary(streamer, stats)


def _show_progress(streamer: RigStreamer, duration: float | None) -> None:
    rate = streamer.rig.sample_rate_hz
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sim]:.2f} s simulated, {task.fields[spikes]} spikes"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("sim-rig", total=duration, sim=0.0, spikes=0)
        while streamer.running:
            stats = streamer.stats
            progress.update(
                task,
                completed=stats.samples / rate,
                sim=stats.samples / rate,
                spikes=stats.ground_truth_spikes,
            )
            time.sleep(0.1)


def _print_summary(streamer: RigStreamer, stats: StreamStats) -> None:
    rig = streamer.rig
    rate = rig.sample_rate_hz
    simulated = stats.simulated_s(rate)
    table = Table(title=f"sim-rig {streamer.rig_id}: sent", show_header=False)
    table.add_row("stream", f"{rig.config.stream.name} ({streamer.source_id})")
    table.add_row("channels x rate", f"{rig.n_channels} x {rate:g} Hz, float32 µV")
    table.add_row("samples", f"{stats.samples} in {stats.chunks} chunks ({simulated:.3f} s)")
    table.add_row(
        "wall time", f"{stats.wall_s:.3f} s (real-time factor {stats.realtime_factor(rate):.2f})"
    )
    table.add_row("late chunks", f"{stats.late_chunks} (max lag {stats.max_lag_s * 1000:.2f} ms)")
    table.add_row("ground-truth spikes", str(stats.ground_truth_spikes))
    for name, count in stats.spikes_per_population.items():
        size = rig.population_slices[name].stop - rig.population_slices[name].start
        mean = count / size / simulated if simulated > 0 else 0.0
        table.add_row(f"  {name}", f"{count} spikes, {mean:.1f} Hz per neuron")
    table.add_row("stimuli", str(stats.stimuli))
    out_console.print(table)
