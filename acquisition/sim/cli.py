"""``bci sim-rig``: run a simulated rig and stream it over LSL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from acquisition.sim.rig import SimulatedRig, warm_up
from acquisition.sim.streamer import RigStreamer, StreamStats
from bci.cliutil import ConfigArg, err_console, fail, load_or_exit, out_console, stop_on_signals
from bci.config import BciConfig
from bci.errors import BciError, ConfigError
from bci.runtime import settle_heap

if TYPE_CHECKING:
    from stimulators.drivers.base import Driver


def sim_rig(
    config: ConfigArg,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            "-d",
            min=0.001,
            help="Simulated seconds to stream; default: until Ctrl-C or SIGTERM.",
        ),
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="As fast as possible instead of real-time pacing.")
    ] = False,
    seed: Annotated[int | None, typer.Option(min=0, help="Override the config's seed.")] = None,
    announce: Annotated[
        bool,
        typer.Option(
            "--announce",
            help="Print one JSON line on stdout once streaming and the drivers are ready "
            "(for a supervising process), and no progress bar.",
        ),
    ] = False,
) -> None:
    """Run the simulated rig of CONFIG and stream it over LSL until stopped or for --duration.

    Simulated stimulation drivers in the config's drivers: section (sim_electrical,
    sim_optical) run in this process and apply commands from the broker to the rig.
    """
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
        drivers = _sim_drivers(cfg, rig)
        streamer = RigStreamer(rig, cfg.rig)
    except BciError as exc:
        raise fail(exc) from None
    err_console.print(
        f"streaming [bold]{rig_cfg.stream.name}[/] (source id {streamer.source_id}): "
        f"{rig.n_channels} channels at {rig.sample_rate_hz:g} Hz, {rig.n_neurons} neurons, "
        f"{rig_cfg.pacing} pacing"
        + (f"; drivers {', '.join(d.name for d in drivers)}" if drivers else ""),
        highlight=False,
    )
    settle_heap()  # no full collection walks the libraries while chunks are due
    if drivers:
        # the rig's thread and the drivers' event loop share the interpreter: hand it over
        # every 0.5 ms (default 5 ms) so a command never waits long for the drivers
        sys.setswitchinterval(0.0005)
    try:
        stats = asyncio.run(_serve(streamer, drivers, duration, announce))
    except BciError as exc:
        raise fail(exc, code=1) from None
    finally:
        streamer.close()
    _print_summary(streamer, stats)
    for d in drivers:
        st = d.stats
        err_console.print(
            f"{d.name}: executed {st.executed}, rejected {st.rejected}, expired {st.expired}, "
            f"safe states {st.safe_entries}",
            highlight=False,
        )


def _sim_drivers(cfg: BciConfig, rig: SimulatedRig) -> list[Driver]:
    """The simulated drivers of ``cfg`` (other driver kinds run with ``bci driver``)."""
    from stimulators.config import effective_mqtt
    from stimulators.drivers import NEEDS_SIM_RIG, create_drivers

    if not any(d.kind in NEEDS_SIM_RIG for d in cfg.drivers):
        return []
    try:
        mqtt = effective_mqtt(cfg.mqtt)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if mqtt is None or mqtt.url is None:
        raise ConfigError(
            "the simulated drivers need a broker: set mqtt.url in the config or BCI_MQTT_URL"
        )
    return create_drivers(cfg, mqtt, sim_rig=rig, kinds=NEEDS_SIM_RIG)


async def _serve(
    streamer: RigStreamer, drivers: list[Driver], duration: float | None, announce: bool
) -> StreamStats:
    from stimulators.drivers import run_drivers

    stop = stop_on_signals()
    streamer.start(duration)
    driver_task = asyncio.create_task(run_drivers(drivers)) if drivers else None
    try:
        if drivers and announce:  # a supervisor wants the drivers up before it goes on
            async with asyncio.timeout(30.0):
                for d in drivers:
                    await d.connected.wait()
        if announce:
            ready = {
                "event": "ready",
                "source_id": streamer.source_id,
                "pid": os.getpid(),
                "drivers": [d.name for d in drivers],
            }
            print(json.dumps(ready), flush=True)
            while streamer.running and not stop.is_set():
                await _wait(stop, 0.1)
        else:
            await _show_progress(streamer, duration, stop)
    except TimeoutError:
        raise BciError("the simulated drivers could not reach the broker within 30 s") from None
    finally:
        streamer.stop()
        if driver_task is not None:
            driver_task.cancel()  # the drivers stop output and close
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await driver_task
        stats = await asyncio.to_thread(streamer.join)
    return stats


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def _show_progress(
    streamer: RigStreamer, duration: float | None, stop: asyncio.Event
) -> None:
    rate = streamer.rig.sample_rate_hz
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sim]:.2f} s simulated, {task.fields[spikes]} spikes"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("sim-rig", total=duration, sim=0.0, spikes=0)
        while streamer.running and not stop.is_set():
            stats = streamer.stats
            progress.update(
                task,
                completed=stats.samples / rate,
                sim=stats.samples / rate,
                spikes=stats.ground_truth_spikes,
            )
            await _wait(stop, 0.1)


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
