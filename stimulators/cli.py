"""``bci driver CONFIG``: run the stimulation drivers of a config as one process;
``bci broker``: run the embedded MQTT broker as one process.

Registered in :mod:`bci.cli`. Bad input gives one clear message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from bci.cliutil import ConfigArg, err_console, load_or_exit, stop_on_signals
from bci.errors import BciError

if TYPE_CHECKING:
    from stimulators.broker import EmbeddedBroker
    from stimulators.drivers import Driver

__all__ = ["broker", "driver"]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def driver(
    config: ConfigArg,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0.0, help="Stop after this many seconds."),
    ] = None,
) -> None:
    """Run the stimulation drivers of CONFIG (its drivers:, stimulation: and mqtt: sections).

    The broker comes from mqtt.url; the environment variable BCI_MQTT_URL overrides it.
    Stops on Ctrl-C (SIGINT) or SIGTERM with every output stopped.
    """
    from stimulators.config import effective_mqtt
    from stimulators.drivers import NEEDS_SIM_RIG, create_drivers

    cfg = load_or_exit(config)
    try:
        mqtt = effective_mqtt(cfg.mqtt)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not cfg.drivers:
        raise _fail(f"{config}: no drivers: section; nothing to run")
    if mqtt is None or mqtt.url is None:
        raise _fail(f"{config}: no broker: set mqtt.url in the config or BCI_MQTT_URL")
    sim = [d.kind for d in cfg.drivers if d.kind in NEEDS_SIM_RIG]
    if sim:
        raise _fail(f"{config}: {sim[0]} drivers run inside `bci sim-rig`, not `bci driver`")
    try:
        drivers = create_drivers(cfg, mqtt)
    except BciError as exc:
        raise _fail(str(exc)) from None
    names = ", ".join(d.name for d in drivers)
    err_console.print(
        f"[green]driver:[/] {names} on {mqtt.broker().redacted()} (rig {cfg.rig})",
        highlight=False,
    )
    try:
        asyncio.run(_serve(drivers, duration))
    except (Exception, ExceptionGroup) as exc:
        first = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
        raise _fail(f"driver stopped: {type(first).__name__}: {first}", code=1) from None
    for d in drivers:
        s = d.stats
        err_console.print(
            f"{d.name}: received {s.received}, executed {s.executed}, rejected {s.rejected}, "
            f"expired {s.expired}, duplicate {s.duplicate}, safe states {s.safe_entries}",
            highlight=False,
        )


async def _serve(drivers: list[Driver], duration: float | None) -> None:
    from stimulators.drivers import run_drivers
    from stimulators.mqtt import stop_task

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(run_drivers(drivers))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await stop_task(waiter)
        await stop_task(task)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def broker(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: a free one, announced).")
    ] = 1883,
    announce: Annotated[
        bool,
        typer.Option(
            "--announce",
            help="Print one JSON line on stdout once the broker accepts connections (for a "
            "supervising process).",
        ),
    ] = False,
) -> None:
    """Run the embedded MQTT broker (amqtt, MQTT 3.1.1, anonymous) until stopped.

    For a machine without Mosquitto: `bci run` starts one of these by itself when a
    config has no mqtt: section. Stops on Ctrl-C (SIGINT) or SIGTERM.
    """
    from stimulators.broker import EmbeddedBroker

    try:  # port 0: the broker takes a free one
        asyncio.run(_serve_broker(EmbeddedBroker(host, port), announce))
    except BciError as exc:
        raise _fail(str(exc), code=1) from None


async def _serve_broker(embedded: EmbeddedBroker, announce: bool) -> None:
    import json

    stop = stop_on_signals()
    async with embedded:
        if announce:
            print(json.dumps({"event": "ready", "url": embedded.url}), flush=True)
        else:
            err_console.print(f"[green]broker:[/] {embedded.url}", highlight=False)
        await stop.wait()
