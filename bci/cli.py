"""The ``bci`` command line.

Every command validates its whole config before anything starts; any
:class:`~bci.errors.BciError` is printed as a clear message with a non-zero exit
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from acquisition.cli_sort import sort_command
from acquisition.recording.cli import export_nwb_command, replay_command, session_command
from acquisition.sim.cli import sim_rig
from bci.cliutil import ConfigArg, err_console, load_or_exit, out_console
from bci.config import dump_config
from bci.run_cli import run
from stimulators.cli import broker, driver

app = typer.Typer(
    help="Closed-loop electrophysiology: simulated rigs, acquisition, decoding, stimulation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


app.command("sim-rig")(sim_rig)
app.command("run")(run)
app.command("sort")(sort_command)
app.command("replay")(replay_command)
app.command("export-nwb")(export_nwb_command)
app.command("session")(session_command)
app.command("driver")(driver)
app.command("broker")(broker)


def main() -> None:
    """Entry point of the ``bci`` console script."""
    # liblsl logs INFO lines to stderr unless told otherwise; read on first use
    os.environ.setdefault("LSLAPICFG", str(Path(__file__).with_name("lsl_api.cfg")))
    app()


if __name__ == "__main__":
    main()
