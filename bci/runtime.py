"""The services of a closed-loop run, wired from one validated config.

Dependency order (the supervisor starts them so, and stops them in reverse):

``broker`` (only when no broker is configured: an embedded amqtt broker) ->
``rig`` (a ``bci sim-rig`` child process: the simulated rig streaming over LSL and its
simulated drivers, when the source is ``sim_rig``) ->
``publisher`` (the controller's MQTT side, behind the safety envelope) ->
``loop`` (LSL inlet and the hot path in their own thread).

Stopping leaves nothing on: the loop stops first (no new commands), the publisher
sends ``stop_all`` to every device and says goodbye on the heartbeat topic, the rig
process gets SIGTERM (its drivers stop output, its streams close), the decoder
checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from acquisition.config import AcquisitionConfig
from acquisition.lsl.inlet import LslInlet
from acquisition.lsl.outlet import read_positions
from acquisition.pipeline import OnlinePipeline
from acquisition.recording.recorder import SessionRecorder
from acquisition.recording.session import Session
from bci.clock import now
from bci.config import BciConfig
from bci.errors import ConfigError, SafetyViolation, ServiceError
from bci.loop import HotPath, LatencyTracer, LoopConfig, decision
from bci.service import Service, Supervisor
from bci.types import Chunk
from decoders.pipeline import DecoderPipeline, build_readout
from decoders.warmup import warm_up as decoders_warm_up
from stimulators import safety_kernels
from stimulators.broker import free_port
from stimulators.commands import Ack, StopAll, new_command_id
from stimulators.config import MqttConfig, effective_mqtt
from stimulators.drivers import NEEDS_SIM_RIG
from stimulators.mqtt import StimPublisher
from stimulators.policies import AnyStimCommand, make_policy
from stimulators.policies import kernels as policy_kernels

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the services of one run share (filled in as they start)."""

    config: BciConfig
    loop_config: LoopConfig
    mqtt: MqttConfig | None = None
    source_id: str | None = None
    publisher: StimPublisher | None = None
    hot: HotPath | None = None
    tracer: LatencyTracer = field(default_factory=LatencyTracer)
    started: float = field(default_factory=now)
    recorder: SessionRecorder | None = None
    inlet_faults: Iterable[Any] = ()


def _acquisition_config(runtime: Runtime) -> AcquisitionConfig:
    cfg = runtime.config.acquisition or AcquisitionConfig()
    if runtime.source_id is not None:
        inlet = cfg.inlet.model_copy(
            update={"source_id": runtime.source_id, "name": None, "type": None}
        )
        cfg = cfg.model_copy(update={"inlet": inlet})
    return cfg


def build_hot_path(
    config: BciConfig,
    positions: np.ndarray,
    sample_rate: float,
    *,
    background_learning: bool = True,
) -> HotPath:
    """The hot path a config describes, for a stream of ``positions`` at ``sample_rate``.

    Online the sorter learns in the background; a replay learns in line
    (``background_learning=False``), so that it is deterministic.
    """
    lc = config.loop or LoopConfig()
    acq = OnlinePipeline(
        config.acquisition or AcquisitionConfig(),
        positions,
        sample_rate,
        background_learning=background_learning,
        sort=lc.sort,
    )
    decoder = readout = None
    section = config.decoders
    if section is not None and lc.use_decoder:
        decoder = DecoderPipeline(section, sample_rate)
        decoder.restore()
        if section.readout is not None:
            readout = build_readout(section.readout, section.n_units, sample_rate)
    policies = [make_policy(p, config.rig, sample_rate) for p in lc.policies]
    return HotPath(acq, policies, decoder, readout, lc.max_raster_spikes)


def replay_decisions(
    session: Session, config: BciConfig, chunk_ms: float = 1.0
) -> list[dict[str, Any]]:
    """Push a recorded session through the hot path of ``config`` as fast as possible and
    return every decision its policies make (see :func:`bci.loop.decision`), in order.

    The policies see the data's own time, so for deterministic stages this reproduces
    the online run's ``stim_decision`` events, sent or suppressed.
    """
    hot = build_hot_path(
        config, session.positions_um, session.sample_rate, background_learning=False
    )
    n = max(1, round(chunk_ms * session.sample_rate / 1000.0))
    out: list[dict[str, Any]] = []
    try:
        for chunk in session.chunks(n):
            at = chunk.timestamp + (chunk.n_samples - 1) / chunk.sample_rate
            _, commands, _ = hot.process(chunk, at=at)
            out.extend(decision(c) for c in commands)
    finally:
        hot.acquisition.close()
    return out


# ---------------------------------------------------------------------- services


class BrokerService(Service):
    """The embedded MQTT broker (``bci broker``), when none is configured, in a child
    process on a loopback port chosen once (a restarted broker comes back where the
    clients look for it). In its own process the broker never competes with the hot
    path for the interpreter: in the loop's process it put the demo's MQTT stage at a
    1.6 ms median."""

    name = "broker"

    def __init__(self, runtime: Runtime, workdir: Path) -> None:
        self.runtime = runtime
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.pid: int | None = None
        self.log_path = workdir / "broker.log"

    async def run(self, ready: Callable[[], None]) -> None:
        cmd = [sys.executable, "-m", "bci", "broker", "--port", str(self.port), "--announce"]
        proc, _ = await _start_child(cmd, self.log_path, "bci broker")
        self.pid = proc.pid
        try:
            # amqtt speaks MQTT 3.1.1 only (and times out on a v5 CONNECT)
            self.runtime.mqtt = MqttConfig(url=self.url, protocol="3.1.1")
            ready()
            await _until_exit(proc, "bci broker", self.log_path)
        finally:
            await _terminate(proc)

    def metrics(self) -> dict[str, Any]:
        return {"url": self.url, "pid": self.pid, "log": str(self.log_path)}


async def _start_child(
    cmd: list[str], log_path: Path, what: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Start ``cmd`` (stderr to ``log_path``) and wait for the JSON line it prints on
    stdout when ready (``{"event": "ready", ...}``); returns the process and that line.
    A child that exits first, or says nothing for 120 s, is a :class:`ServiceError`."""
    with log_path.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=log_file, env=env
        )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120.0):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    code = await proc.wait()
                    raise ServiceError(
                        f"{what} exited before it was ready (code {code}); see {log_path}"
                    )
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    if isinstance(msg, dict) and msg.get("event") == "ready":
                        return proc, msg
    except BaseException:
        await _terminate(proc)
        raise


async def _until_exit(proc: asyncio.subprocess.Process, what: str, log_path: Path) -> None:
    """Drain the child's stdout until it exits, which is a failure (the supervisor
    restarts it)."""
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass
    code = await proc.wait()
    raise ServiceError(f"{what} exited by itself (code {code}); see {log_path}")


class RigService(Service):
    """The simulated rig and its simulated drivers, as a ``bci sim-rig`` child process.

    The rig is a separate process, as a real amplifier and stimulator would be: it
    streams over LSL and takes commands over MQTT, and never competes with the hot path
    for the interpreter. The broker reaches it through ``BCI_MQTT_URL`` (credentials
    never touch the disk). Ready once the child says its stream and drivers are up;
    a child that exits by itself is a failure (the supervisor restarts it); on stop it
    gets SIGTERM (its drivers stop output) and, after 10 s, SIGKILL.
    """

    name = "rig"

    def __init__(self, runtime: Runtime, workdir: Path, needs_broker: bool) -> None:
        self.runtime = runtime
        self.workdir = workdir
        self.depends_on = ("broker",) if needs_broker else ()
        self.pid: int | None = None
        self.source_id: str | None = None
        self.log_path = workdir / "sim-rig.log"

    def _child_config(self) -> Path:
        rt = self.runtime
        data = rt.config.model_dump(mode="json", exclude={"loop"})
        if rt.mqtt is not None:
            data["mqtt"] = {"protocol": rt.mqtt.protocol}
        path = self.workdir / "sim-rig.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    async def run(self, ready: Callable[[], None]) -> None:
        rt = self.runtime
        env = dict(os.environ)
        if rt.mqtt is not None and rt.mqtt.url is not None:
            env["BCI_MQTT_URL"] = rt.mqtt.url
        cmd = [sys.executable, "-m", "bci", "sim-rig", str(self._child_config()), "--announce"]
        proc, msg = await _start_child(cmd, self.log_path, "bci sim-rig", env=env)
        self.pid = proc.pid
        try:
            self.source_id = rt.source_id = str(msg["source_id"])
            ready()
            await _until_exit(proc, "bci sim-rig", self.log_path)
        finally:
            await _terminate(proc)

    def metrics(self) -> dict[str, Any]:
        return {"pid": self.pid, "log": str(self.log_path)}


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; always reaps the process."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        log.error("sim-rig pid %s ignored SIGTERM for %g s: killing it", proc.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class PublisherService(Service):
    """The controller's MQTT publisher; on stop it tells every device to stop output."""

    name = "publisher"

    def __init__(self, runtime: Runtime, needs_broker: bool) -> None:
        self.runtime = runtime
        self.depends_on = ("broker",) if needs_broker else ()

    async def run(self, ready: Callable[[], None]) -> None:
        rt = self.runtime
        assert rt.mqtt is not None
        assert rt.config.stimulation is not None
        async with StimPublisher(
            rt.mqtt, rt.config.stimulation, rt.config.rig, on_ack=self._on_ack
        ) as pub:
            await pub.wait_connected()
            rt.publisher = pub
            try:
                ready()
                await asyncio.Event().wait()
            finally:
                await self._stop_all(pub)
                rt.publisher = None

    def _on_ack(self, ack: Ack) -> None:
        self.runtime.tracer.on_ack(ack)
        if self.runtime.recorder is not None:
            self.runtime.recorder.write_event("stim_ack", ack.model_dump(mode="json"))

    async def _stop_all(self, pub: StimPublisher) -> None:
        """Send stop_all to every device and wait (up to 1 s) for the acks."""
        rt = self.runtime
        assert rt.config.stimulation is not None
        t = now()
        ids = []
        for device in rt.config.stimulation.devices:
            cmd = StopAll(
                command_id=new_command_id(),
                rig=rt.config.rig,
                device=device.name,
                cause={"time": t, "sample": 0},
                deadline=t + 1.0,
            )
            with contextlib.suppress(SafetyViolation):
                pub.submit(cmd)
                ids.append(cmd.command_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                for cid in ids:
                    await pub.wait_ack(cid)

    def metrics(self) -> dict[str, Any]:
        pub = self.runtime.publisher
        if pub is None:
            return {}
        s = pub.stats
        return {"published": s.published, "rejected": s.rejected, "dropped": s.dropped_full}


class LoopService(Service):
    """The LSL inlet and the hot path, in a thread of their own so that blocking pulls
    never block the event loop; that thread hands commands to the publisher, which
    writes them to the broker before the next pull (see ``StimPublisher``)."""

    name = "loop"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        deps = []
        if runtime.loop_config.source.kind == "sim_rig":
            deps.append("rig")
        if runtime.loop_config.policies:
            deps.append("publisher")
        self.depends_on = tuple(deps)
        self._stop = threading.Event()
        self.max_staleness_s = runtime.loop_config.max_staleness_ms / 1000.0

    async def run(self, ready: Callable[[], None]) -> None:
        rt = self.runtime
        self._stop.clear()
        recorder: SessionRecorder | None = None
        # kernels were compiled before the services started (warm_up_all); the samples
        # start flowing only once the hot path is built, so no backlog piles up while
        # anything gets ready (its first chunks would be stale: no command from them)
        inlet = LslInlet(_acquisition_config(rt).inlet)
        await asyncio.to_thread(inlet.open, start=False)
        rt.inlet_faults = inlet.faults  # the inlet's own bounded record, read at the end
        try:
            info = await asyncio.to_thread(inlet.full_info)
            positions = read_positions(info)
            if positions is None:
                raise ConfigError(
                    "the stream has no electrode positions in its description; the "
                    "detector needs them (channels/channel/location)"
                )
            hot = build_hot_path(rt.config, positions, info.nominal_srate())
            rt.hot = hot
            if rt.config.recording is not None:
                recorder = SessionRecorder(
                    SessionRecorder.new_folder(rt.config.recording.folder, rt.config.rig),
                    info.nominal_srate(),
                    info.channel_count(),
                    config=rt.config.recording,
                    positions_um=positions,
                    resolved_config=rt.config,
                    rig=rt.config.rig,
                ).start()
                rt.recorder = recorder
            settle_heap()  # what the services built, too: before any sample flows
            await asyncio.to_thread(inlet.start)
            ready()
            await asyncio.to_thread(self._pull_loop, inlet, hot, recorder)
        finally:
            self._stop.set()
            inlet.close()
            if recorder is not None:
                rt.recorder = None
                await asyncio.to_thread(recorder.close)
            if rt.hot is not None:
                if rt.hot.decoder is not None:
                    rt.hot.decoder.shutdown(rt.hot.stats.end_sample)
                rt.hot.acquisition.close()

    def _pull_loop(
        self,
        inlet: LslInlet,
        hot: HotPath,
        recorder: SessionRecorder | None,
    ) -> None:
        rate = hot.acquisition.sample_rate
        poll_s = self.runtime.loop_config.poll_ahead_ms / 1000.0
        rehearse_s = self.runtime.loop_config.rehearse_ms / 1000.0
        acted = 0.0  # LSL time of the last command or rehearsal
        expected: float | None = None  # LSL time the next chunk should be complete
        while not self._stop.is_set():
            if poll_s > 0 and expected is not None:
                chunks = self._poll(inlet, expected, poll_s)
            else:
                chunks = inlet.pull(timeout=0.05)
            pulled = now()
            for chunk in chunks:
                chunk_end = chunk.timestamp + (chunk.n_samples - 1) / rate
                expected = chunk_end + chunk.n_samples / rate
                stale = pulled - chunk_end > self.max_staleness_s
                batch, commands, suppressed = hot.process(chunk, stale=stale)
                if commands:
                    # act first, record after: from this thread, the publisher writes
                    # each command to the broker before submit returns
                    at = now()
                    rejected = self._submit(commands)
                    tracer = self.runtime.tracer
                    for cmd in commands:
                        tracer.on_command(cmd, chunk_end, pulled, at)
                    for cmd, rule in rejected:
                        tracer.on_rejected(cmd, rule)
                    acted = at
                if recorder is not None:
                    recorder.write(chunk)
                    recorder.write_spikes(batch)
                    for cmd in commands:
                        recorder.write_event("stim_decision", sent=True, command=decision(cmd))
                    for cmd in suppressed:
                        recorder.write_event(
                            "stim_decision", sent=False, reason="stale", command=decision(cmd)
                        )
            if rehearse_s > 0 and chunks and (t := now()) - acted >= rehearse_s:
                acted = t
                self._rehearse(hot, t)

    def _poll(self, inlet: LslInlet, expected: float, poll_s: float) -> list[Chunk]:
        """Sleep until ``poll_s`` before the next chunk is due, then poll for it without
        sleeping until ``poll_s`` after (so that the thread and its caches are awake
        when it lands), then fall back to waiting."""
        wait = expected - poll_s - now()
        if wait > 0:
            chunks = inlet.pull(timeout=wait)
            if chunks:
                return chunks
        while now() < expected + poll_s:
            chunks = inlet.pull(timeout=0.0)
            if chunks:
                return chunks
        return inlet.pull(timeout=0.05)

    def _rehearse(self, hot: HotPath, at: float) -> None:
        pub = self.runtime.publisher
        if pub is not None:
            for cmd in hot.rehearsals(at):
                pub.rehearse(cmd)

    def _submit(self, commands: list[AnyStimCommand]) -> list[tuple[AnyStimCommand, str]]:
        """Hand ``commands`` to the publisher; returns those refused, with the rule."""
        pub = self.runtime.publisher
        rejected: list[tuple[AnyStimCommand, str]] = []
        for cmd in commands:
            if pub is None:
                rejected.append((cmd, "publisher.unavailable"))
                continue
            try:
                pub.submit(cmd)
            except SafetyViolation as exc:
                log.warning("policy command rejected by the envelope: %s", exc)
                rejected.append((cmd, exc.rule))
        return rejected

    def metrics(self) -> dict[str, Any]:
        hot = self.runtime.hot
        return {} if hot is None else hot.status()


# ---------------------------------------------------------------------- wiring


def build_runtime(config: BciConfig, workdir: Path) -> tuple[Runtime, list[Service]]:
    """The services a config asks for, in no particular order (the supervisor sorts).

    ``workdir`` receives the rig process's config and log.
    """
    loop_config = config.loop or LoopConfig()
    try:
        mqtt = effective_mqtt(config.mqtt)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    rt = Runtime(config=config, loop_config=loop_config, mqtt=mqtt if mqtt and mqtt.url else None)
    needs_broker = rt.mqtt is None
    sim_drivers = any(d.kind in NEEDS_SIM_RIG for d in config.drivers)
    sim_source = loop_config.source.kind == "sim_rig"
    services: list[Service] = []
    if needs_broker and (loop_config.policies or (sim_source and sim_drivers)):
        services.append(BrokerService(rt, workdir))
    else:
        needs_broker = False
    if sim_source:
        if config.sim_rig is None:
            raise ConfigError("loop.source is sim_rig but the config has no sim_rig: section")
        workdir.mkdir(parents=True, exist_ok=True)
        services.append(RigService(rt, workdir, needs_broker and sim_drivers))
    if loop_config.policies:
        if config.stimulation is None:
            raise ConfigError("loop.policies need a stimulation: section with their devices")
        services.append(PublisherService(rt, needs_broker))
    services.append(LoopService(rt))
    return rt, services


def warm_up_all(config: BciConfig) -> None:
    """Compile every numba kernel the loop will use, before any service starts: a
    compilation holds the GIL for long stretches, which would starve the event loop
    (and the controller's heartbeat) if it happened while services run. (The rig
    process warms up its own kernels.)"""
    OnlinePipeline.warm_up()
    safety_kernels.warm_up()
    policy_kernels.warm_up()
    if (config.loop or LoopConfig()).sort:
        # the sorter's first learning step would otherwise import scikit-learn (about
        # 1 s holding the interpreter) in the middle of the loop
        import sklearn.cluster  # noqa: F401
    if config.decoders is not None:
        decoders_warm_up()


#: How often (s) a thread holding the interpreter is asked to hand it over. Python's
#: 5 ms default would let the event loop's ack handling hold up the hot path's thread
#: for up to 5 ms after its pull returns; the loop's process uses this instead.
SWITCH_INTERVAL_S = 0.0001


def settle_heap() -> None:
    """Collect once and move everything alive (modules, compiled kernels, configs) out
    of the garbage collector's sight, before the loop is armed: a full collection
    walks every tracked object, and with the libraries a run imports that took 80 ms
    here, holding the interpreter while chunks pile up. Later collections only walk
    what the run itself allocates."""
    gc.collect()
    gc.freeze()


async def run_loop(
    config: BciConfig,
    duration_s: float | None = None,
    *,
    workdir: Path,
    on_runtime: Callable[[Runtime, Supervisor], None] | None = None,
    handle_signals: bool = True,
) -> tuple[Runtime, Supervisor]:
    """Run the closed loop of ``config`` until ``duration_s`` or a signal."""
    rt, services = build_runtime(config, workdir)
    await asyncio.to_thread(warm_up_all, config)
    settle_heap()
    supervisor = Supervisor(services, rt.loop_config.restart, handle_signals=handle_signals)
    if on_runtime is not None:
        on_runtime(rt, supervisor)
    await supervisor.run(duration_s)
    return rt, supervisor
