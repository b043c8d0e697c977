"""``bci check`` and ``bci sim-rig`` on good and bad configs, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bci.cli import app
from bci.config import BciConfig, load_config

ROOT = Path(__file__).parents[2]
runner = CliRunner()

GOOD = {
    "rig": "rig0",
    "sim_rig": {
        "probe": {"kind": "linear", "n_electrodes": 8},
        "populations": [{"name": "a", "count": 3, "model": {"kind": "lif"}}],
    },
}


def write(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def bad(change: dict) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    sim = data["sim_rig"]
    for key, value in change.items():
        target = sim
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[leaf] = value
    return data


def test_every_shipped_config_is_valid() -> None:
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert isinstance(load_config(path), BciConfig), path


def test_check_prints_resolved_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(write(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["sim_rig"]["sample_rate_hz"] == 30000.0  # default filled in
    assert resolved["sim_rig"]["populations"][0]["model"]["tau_m_ms"] == 20.0


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"sample_rate_hz": "fast"}, "sim_rig.sample_rate_hz", "'fast'"),
        ({"colour": "blue"}, "sim_rig.colour", "'blue'"),
        ({"sample_rate_hz": -30000}, "sim_rig.sample_rate_hz", "-30000"),
        ({"populations.0.model": {"kind": "squid"}}, "sim_rig.populations[0].model", "squid"),
        ({"populations.0.count": 0}, "sim_rig.populations[0].count", "0"),
        ({"probe": {"kind": "grid", "n_rows": 2.5}}, "sim_rig.probe.grid.n_rows", "2.5"),
    ],
)
def test_bad_config_names_file_field_and_value(
    tmp_path: Path, change: dict, field: str, value: str
) -> None:
    path = write(tmp_path, bad(change))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    message = result.stderr
    assert str(path) in message
    assert field in message
    assert value in message
    assert "Traceback" not in result.output


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "config file not found" in result.stderr
    result = runner.invoke(app, ["check", str(write(tmp_path, "sim_rig: [unclosed"))])
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr
    result = runner.invoke(app, ["check", str(write(tmp_path, "- a list\n- not a mapping"))])
    assert result.exit_code == 2
    assert "must be a mapping" in result.stderr


def test_sim_rig_without_section_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim-rig", str(write(tmp_path, {"rig": "r1"}))])
    assert result.exit_code == 2
    assert "no 'sim_rig' section" in result.stderr


def test_help_on_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = [
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    ]
    assert "check" in commands
    assert "sim-rig" in commands
    for name in commands:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Usage" in sub.output


@pytest.mark.integration
def test_sim_rig_command_streams_and_prints_what_it_sent(tmp_path: Path) -> None:
    """The real console script, as the README runs it (fast pacing to keep it short)."""
    path = write(tmp_path, GOOD)
    proc = subprocess.run(
        [sys.executable, "-m", "bci", "sim-rig", str(path), "--duration", "0.5", "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "15000 in" in proc.stdout  # samples sent
    assert "8 x 30000 Hz" in proc.stdout
    assert "ground-truth spikes" in proc.stdout


def test_bad_config_through_console_script_has_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, bad({"sample_rate_hz": -1}))
    proc = subprocess.run(
        [sys.executable, "-m", "bci", "sim-rig", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "sim_rig.sample_rate_hz" in proc.stderr
