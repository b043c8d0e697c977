"""Config sections of the stimulation layer and the ``bci driver`` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bci.cli import app
from bci.clock import now
from bci.config import dump_config, load_config
from bci.errors import ConfigError
from stimulators.config import MqttConfig, effective_mqtt, parse_mqtt_url
from stimulators.mqtt import StimPublisher
from tests.stimulators.helpers import electrical, mqtt_config

REPO = Path(__file__).resolve().parents[2]
DRYRUN = REPO / "configs" / "driver_dryrun.yaml"


def test_mqtt_url_parsing_and_secret_redaction() -> None:
    b = parse_mqtt_url("mqtt://user:s%40cret@broker.lab:1884")
    assert (b.host, b.port, b.username, b.password, b.tls) == (
        "broker.lab",
        1884,
        "user",
        "s@cret",
        False,
    )
    assert parse_mqtt_url("mqtts://h").port == 8883
    for bad in ("http://h:1", "mqtt://", "mqtt://h:99999", "mqtt://h/path"):
        with pytest.raises(ValueError, match=r"MQTT URL|port"):
            parse_mqtt_url(bad)
    dumped = MqttConfig(url="mqtt://user:secret@127.0.0.1:1883").model_dump(mode="json")
    assert "secret" not in json.dumps(dumped)


def test_env_overrides_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = MqttConfig(url="mqtt://127.0.0.1:1883", client_id="me")
    monkeypatch.setenv("BCI_MQTT_URL", "mqtt://u:p@10.0.0.2:1999")
    eff = effective_mqtt(cfg)
    assert eff is not None
    assert eff.broker().host == "10.0.0.2"
    assert eff.client_id == "me"
    assert effective_mqtt(None) is not None
    monkeypatch.setenv("BCI_MQTT_URL", "ftp://nope")
    with pytest.raises(ValueError, match="BCI_MQTT_URL"):
        effective_mqtt(cfg)


def test_shipped_dryrun_config_is_valid() -> None:
    cfg = load_config(DRYRUN)
    assert [d.kind for d in cfg.drivers] == ["dryrun", "dryrun"]
    assert cfg.stimulation is not None
    assert "drivers:" in dump_config(cfg)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base_config() -> dict[str, Any]:
    return yaml.safe_load(DRYRUN.read_text())


def test_bad_envelope_values_name_the_field(tmp_path: Path) -> None:
    data = base_config()
    data["stimulation"]["devices"][0]["electrodes"][0]["max_imbalance"] = 0.05
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert "stimulation.devices[0].electrical.electrodes[0].max_imbalance" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("drivers"), "no drivers"),
        (lambda d: d["drivers"][0].update(device="nope"), "drivers[0].device"),
        (
            lambda d: d["drivers"].__setitem__(0, {"kind": "sim_electrical", "device": "stim0"}),
            "bci sim-rig",
        ),
        (lambda d: d.pop("mqtt"), "no broker"),
        (lambda d: d["mqtt"].update(url="http://x"), "mqtt.url"),
        (lambda d: d["stimulation"].update(bogus=1), "stimulation.bogus"),
    ],
)
def test_driver_command_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any, message: str
) -> None:
    monkeypatch.delenv("BCI_MQTT_URL", raising=False)
    data = base_config()
    change(data)
    result = CliRunner().invoke(app, ["driver", str(write(tmp_path, data))])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_driver_command_missing_file_and_bad_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(app, ["driver", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output
    monkeypatch.setenv("BCI_MQTT_URL", "mqtt://")
    result = CliRunner().invoke(app, ["driver", str(DRYRUN)])
    assert result.exit_code == 2
    assert "BCI_MQTT_URL" in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_bci_driver_process_executes_and_stops_cleanly(
    mqtt_broker: Any, tmp_path: Path
) -> None:
    cfg = load_config(DRYRUN)
    assert cfg.stimulation is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bci.cli",
        "driver",
        str(DRYRUN),
        cwd=tmp_path,
        env={**os.environ, "BCI_MQTT_URL": mqtt_broker.url, "PYTHONPATH": str(REPO)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with StimPublisher(mqtt_config(mqtt_broker.url), cfg.stimulation, "rig0") as pub:
            # held until the driver process reports ready (its start-up takes seconds)
            cmd = electrical(device="stim0", electrodes=[7], deadline=now() + 40.0)
            pub.submit(cmd)
            async with asyncio.timeout(30):
                ack = await pub.wait_ack(cmd.command_id)
            assert ack.status == "executed"
            assert ack.driver == "dryrun:stim0"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert proc.stderr is not None
            err = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "Traceback" not in err
    assert "dryrun:stim0: received 1, executed 1" in err
    lines = [json.loads(x) for x in (tmp_path / "stim0_dryrun.jsonl").read_text().splitlines()]
    executed = [x for x in lines if x["event"] == "execute"]
    assert [x["command"]["command_id"] for x in executed] == [str(cmd.command_id)]
    assert lines[-1]["event"] == "stop"


async def test_publisher_queue_is_bounded_and_counts_drops() -> None:
    from tests.stimulators.helpers import stimulation_config

    pub = StimPublisher(
        mqtt_config("mqtt://127.0.0.1:1", queue_size=3), stimulation_config(), "rig0"
    )
    for e in range(6):
        pub.submit(electrical(electrodes=[e]))
    assert pub.queued == 3
    assert pub.stats.dropped_full == 3
