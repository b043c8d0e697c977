"""Run ``bci sim-rig --announce`` as a separate process for a test (an amplifier and its
stimulation drivers stand-in), ready when it says so, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sim_rig_process(config: Path, broker_url: str) -> Iterator[subprocess.Popen[str]]:
    """Start the rig of ``config`` with its drivers on ``broker_url``; yield once ready.

    On exit the process gets SIGTERM (its drivers stop output) and is waited for; its
    stderr (the summary) is then in ``proc.stderr_text``.
    """
    env = dict(os.environ, BCI_MQTT_URL=broker_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bci", "sim-rig", str(config), "--announce"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert '"ready"' in line, f"bci sim-rig did not get ready: {line!r}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        proc.stderr_text = err  # type: ignore[attr-defined]
