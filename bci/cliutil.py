"""Helpers shared by every ``bci`` sub-command (kept apart from :mod:`bci.cli` so that
command modules in other packages can import them without an import cycle)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bci.config import BciConfig, load_config
from bci.errors import BciError, ConfigError

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


def fail(exc: BciError, code: int = 2) -> typer.Exit:
    """Print an error for a person (no traceback) and return the exit to raise."""
    kind = "config error" if isinstance(exc, ConfigError) else "error"
    err_console.print(f"[bold red]{kind}:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(code)


def load_or_exit(path: Path) -> BciConfig:
    """Load and validate a whole config, or print why not and exit with code 2."""
    try:
        return load_config(path)
    except BciError as exc:
        raise fail(exc) from None


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets, for a command's running event loop (where
    the loop cannot install handlers, e.g. off the main thread, it stays unset)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop
