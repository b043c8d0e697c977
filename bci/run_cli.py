"""``bci run``: the closed loop, supervised, with live progress and a session report."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.live import Live
from rich.table import Table

from bci.cliutil import ConfigArg, err_console, fail, load_or_exit, out_console
from bci.clock import now
from bci.errors import BciError
from bci.runtime import SWITCH_INTERVAL_S, Runtime, run_loop
from bci.service import Supervisor


def run(
    config: ConfigArg,
    duration: Annotated[
        float | None,
        typer.Option("--duration", "-d", min=0.1, help="Seconds to run; default: until Ctrl-C."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Folder for the session report (PNG figures + HTML)."),
    ] = None,
) -> None:
    """Run the closed loop of CONFIG: source, spike sorting, decoder, policies, stimulation.

    With no broker configured (mqtt.url or BCI_MQTT_URL) an embedded broker is started.
    SIGINT or SIGTERM stop it cleanly: devices are told to stop output, the rig process
    ends, streams and files close, the decoder checkpoints.
    """
    cfg = load_or_exit(config)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    workdir = report if report is not None else Path(tempfile.mkdtemp(prefix="bci-run-"))
    holder: dict[str, Any] = {}

    async def main() -> None:
        ready = asyncio.Event()

        def on_runtime(rt: Runtime, sup: Supervisor) -> None:
            holder["rt"], holder["sup"] = rt, sup
            ready.set()

        progress = asyncio.create_task(_progress(holder, ready, duration))
        try:
            await run_loop(cfg, duration, workdir=workdir, on_runtime=on_runtime)
        finally:
            progress.cancel()

    failure: BciError | None = None
    try:
        asyncio.run(main())
    except BciError as exc:
        failure = exc
    except KeyboardInterrupt:
        err_console.print("interrupted")
    rt: Runtime | None = holder.get("rt")
    sup: Supervisor | None = holder.get("sup")
    if rt is not None and sup is not None:
        _print_summary(rt, sup)
        if report is not None:
            from bci.report import write_report

            index = write_report(rt, sup.health(), report, f"bci run {config.name} ({cfg.rig})")
            out_console.print(f"report: {index}")
    if failure is not None:
        raise fail(failure, code=1)


def _status_table(rt: Runtime, sup: Supervisor, started: float, duration: float | None) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    elapsed = now() - started
    table.add_row("elapsed", f"{elapsed:6.1f} s" + (f" of {duration:g} s" if duration else ""))
    hot = rt.hot
    if hot is not None:
        st = hot.status()
        learning = " (learning templates)" if st["learning"] else ""
        table.add_row("spikes", f"{st['spikes']}, {st['units']} units{learning}")
        for p in hot.policies:
            fields = ", ".join(f"{k} {v:.3g}" for k, v in p.status().items())
            table.add_row(f"policy {p.kind}", fields)
    acks = rt.tracer.status_counts
    table.add_row(
        "stimulation", ", ".join(f"{k} {v}" for k, v in sorted(acks.items())) or "none yet"
    )
    total = rt.tracer.recent_total_ms()
    if total.size:
        table.add_row(
            "latency",
            f"median {np.median(total):.2f} ms, p99 {np.percentile(total, 99):.2f} ms "
            f"(spike to driver, last {total.size} commands)",
        )
    states = ", ".join(f"{name} {h['state']}" for name, h in sup.health().items())
    table.add_row("services", states)
    return table


async def _progress(holder: dict[str, Any], ready: asyncio.Event, duration: float | None) -> None:
    await ready.wait()
    started = now()
    rt, sup = holder["rt"], holder["sup"]
    with Live(console=err_console, refresh_per_second=4, transient=True) as live:
        while True:
            live.update(_status_table(rt, sup, started, duration))
            await asyncio.sleep(0.25)


def _print_summary(rt: Runtime, sup: Supervisor) -> None:
    from bci.report import summarise

    s = summarise(rt, sup.health())
    table = Table(title=f"bci run {rt.config.rig}: summary", show_header=False)
    for key in ("seconds", "spikes", "units", "stale_chunks"):
        if key in s:
            table.add_row(key, str(s[key]))
    for kind, status in s.get("policies", {}).items():
        table.add_row(f"policy {kind}", ", ".join(f"{k} {v:.3g}" for k, v in status.items()))
    table.add_row("acks", ", ".join(f"{k} {v}" for k, v in sorted(s["acks"].items())) or "none")
    table.add_row("rejected by the envelope", str(s["rejected_by_controller_envelope"]))
    for stage, fig in s["latency_ms"].items():
        if fig.get("n"):
            table.add_row(
                f"latency {stage}",
                f"median {fig['median']:.2f}, p99 {fig['p99']:.2f}, max {fig['max']:.2f} ms",
            )
    for inc in sup.incidents:
        table.add_row(f"incident {inc.service}", f"{inc.error} -> {inc.action}")
    if sup.stop_reason:
        table.add_row("stopped", sup.stop_reason)
    out_console.print(table)
