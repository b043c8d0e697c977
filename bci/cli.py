"""The ``bci`` command line.

Every command validates its whole config before anything starts; any
:class:`~bci.errors.BciError` is printed as a clear message with a non-zero exit
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bci.config import BciConfig, dump_config, load_config
from bci.errors import BciError, ConfigError

app = typer.Typer(
    help="Closed-loop electrophysiology: simulated rigs, acquisition, decoding, stimulation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
out_console = Console()

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


def fail(exc: BciError, code: int = 2) -> typer.Exit:
    """Print an error for a person (no traceback) and return the exit to raise."""
    kind = "config error" if isinstance(exc, ConfigError) else "error"
    err_console.print(f"[bold red]{kind}:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(code)


def load_or_exit(path: Path) -> BciConfig:
    try:
        return load_config(path)
    except BciError as exc:
        raise fail(exc) from None


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging.")] = 0,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command()
def check(config: ConfigArg) -> None:
    """Validate CONFIG and print the resolved config (every default filled in)."""
    cfg = load_or_exit(config)
    out_console.print(dump_config(cfg), markup=False, highlight=False, end="")
    err_console.print(f"[green]ok:[/] {config} is valid", highlight=False)


def main() -> None:
    """Entry point of the ``bci`` console script."""
    app()


if __name__ == "__main__":
    main()
