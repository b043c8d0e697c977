"""Stimulation command latency over a real MQTT broker on loopback.

Starts a private Mosquitto (or uses ``--url``), runs ``bci driver`` (dry-run driver) in
its own process, and publishes electrical commands from this process through the
controller's :class:`~stimulators.mqtt.StimPublisher` (envelope check, QoS 1). Every
time is on the LSL clock, shared by both processes:

- publish-to-receipt: the publisher's send stamp (``sent``) to the driver's receipt
  (``received`` in its ack);
- publish-to-ack: ``sent`` to the arrival of the ``accepted`` and ``executed`` acks
  back at the controller;
- submit-to-publish: time a command waits in the publisher's queue;
- inside the driver: receipt to the ``executed`` ack being made (decode, validate,
  envelope, dry-run execution).

Prints median, p99 and max (ms) and compares them with one 1 ms acquisition chunk.

Two transports, one after the other in the same run: commands on the command channel
(:mod:`stimulators.channel`: written by the submitting thread, read and stamped by a
network thread; the default) and on the asyncio connections (aiomqtt at both ends, as
before the channel existed), with the ratio of their publish-to-receipt latencies.

    python benchmarks/stim_latency.py [--count 2000] [--rate 200] [--url mqtt://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bci.clock import now  # noqa: E402
from bci.errors import SafetyViolation  # noqa: E402
from stimulators.broker import MosquittoBroker  # noqa: E402
from stimulators.commands import Ack, Cause, ElectricalPulseTrain  # noqa: E402
from stimulators.config import MqttConfig, StimulationConfig  # noqa: E402
from stimulators.mqtt import StimPublisher  # noqa: E402

CHUNK_MS = 1.0
N_ELECTRODES = 8


def config(url: str, log: Path, channel: bool) -> dict:
    return {
        "rig": "bench",
        "mqtt": {"url": url},
        "stimulation": {
            "heartbeat_interval_ms": 100,
            "heartbeat_timeout_ms": 500,
            "devices": [
                {
                    "kind": "electrical",
                    "name": "stim0",
                    "electrodes": [
                        {
                            "ids": [f"0-{N_ELECTRODES - 1}"],
                            "material": "iridium_oxide",
                            "geometric_area_um2": 1250,
                        }
                    ],
                }
            ],
        },
        "drivers": [
            {"kind": "dryrun", "device": "stim0", "log": str(log), "command_channel": channel}
        ],
    }


def stats(values_s: list[float]) -> str:
    a = np.asarray(values_s) * 1e3
    if a.size == 0:
        return "no samples"
    return (
        f"median {np.median(a):7.3f}  p99 {np.percentile(a, 99):7.3f}  max {a.max():7.3f} ms"
        f"   ({np.mean(a < CHUNK_MS) * 100:5.1f}% under one {CHUNK_MS:g} ms chunk,"
        f" median = {np.median(a) / CHUNK_MS:.2f} chunks)"
    )


async def run(url: str, count: int, rate: float, warmup: int, channel: bool) -> list[float]:
    """Send the commands over one transport; returns the publish-to-receipt times (s)."""
    tmp = Path(tempfile.mkdtemp(prefix="bci-stim-bench-"))
    cfg_path = tmp / "bench.yaml"
    data = config(url, tmp / "dryrun.jsonl", channel)
    cfg_path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BCI_MQTT_URL", None)
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bci.cli", "driver", str(cfg_path), cwd=tmp, env=env
    )
    arrivals: dict[tuple[uuid.UUID, str], tuple[float, Ack]] = {}

    def on_ack(ack: Ack) -> None:
        if ack.command_id is not None:
            arrivals[(ack.command_id, ack.status)] = (now(), ack)

    stim = StimulationConfig.model_validate(data["stimulation"])
    submitted: list[tuple[ElectricalPulseTrain, float]] = []
    refused = 0
    try:
        async with StimPublisher(
            MqttConfig(url=url), stim, "bench", on_ack=on_ack, command_channel=channel
        ) as pub:
            print("waiting for the driver process ...", flush=True)
            async with asyncio.timeout(60):
                await pub.wait_device_ready("stim0")
            period = 1.0 / rate
            t_next = now()
            for i in range(warmup + count):
                delay = t_next - now()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the command stream
                elif delay < -period:
                    t_next = now()  # fell behind (a stall): do not send a burst
                t_next += period
                t = now()
                cmd = ElectricalPulseTrain(
                    command_id=uuid.uuid4(),
                    rig="bench",
                    device="stim0",
                    cause=Cause(time=t, sample=i * 30),
                    deadline=t + 0.2,
                    electrodes=[i % N_ELECTRODES],
                    amplitudes_ua=(10.0, 10.0),
                    widths_us=(100.0, 100.0),
                )
                try:
                    pub.submit(cmd)
                except SafetyViolation as exc:
                    refused += 1
                    print(f"controller refused a command: {exc}", flush=True)
                    continue
                if i >= warmup:
                    submitted.append((cmd, t))
            # every command's deadline is 0.2 s: any ack still to come arrives well within 2 s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await pub.wait_ack(submitted[-1][0].command_id)
            stats_pub = pub.stats
    finally:
        driver.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await driver.wait()
        if driver.returncode is None:
            driver.kill()
    receipt, ack_accepted, ack_executed, queueing, inside = [], [], [], [], []
    missing = 0
    for cmd, t_submit in submitted:
        ex = arrivals.get((cmd.command_id, "executed"))
        acc = arrivals.get((cmd.command_id, "accepted"))
        if ex is None or acc is None or ex[1].sent is None:
            missing += 1
            continue
        sent = ex[1].sent
        receipt.append(ex[1].received - sent)
        ack_executed.append(ex[0] - sent)
        ack_accepted.append(acc[0] - sent)
        queueing.append(sent - t_submit)
        inside.append(ex[1].time - ex[1].received)
    print(
        f"\n{'command channel' if channel else 'asyncio (aiomqtt)'}: "
        f"{len(submitted)} commands at {rate:g}/s over {url} "
        f"(+{warmup} warm-up), {missing} without an executed ack; "
        f"publisher: {stats_pub.published} published, {stats_pub.dropped_expired} expired, "
        f"{stats_pub.dropped_full} dropped, {refused} refused by the envelope"
    )
    print(f"  publish -> driver receipt : {stats(receipt)}")
    print(f"  publish -> 'accepted' ack : {stats(ack_accepted)}")
    print(f"  publish -> 'executed' ack : {stats(ack_executed)}")
    print(f"  submit  -> publish (queue): {stats(queueing)}")
    print(f"  driver: receipt -> executed: {stats(inside)}")
    return receipt


async def both(url: str, count: int, rate: float, warmup: int) -> None:
    fast = await run(url, count, rate, warmup, channel=True)
    slow = await run(url, count, rate, warmup, channel=False)
    if fast and slow:
        ratio = np.median(slow) / np.median(fast)
        p99 = np.percentile(slow, 99) / np.percentile(fast, 99)
        print(
            f"\npublish -> driver receipt, asyncio / command channel: median {ratio:.1f}x, "
            f"p99 {p99:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="commands per second")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--url", help="an existing broker (default: a private Mosquitto)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(both(args.url, args.count, args.rate, args.warmup))
        return
    with MosquittoBroker() as broker:
        asyncio.run(both(broker.url, args.count, args.rate, args.warmup))


if __name__ == "__main__":
    main()
