"""The supervisor: dependency order, restarts with backoff and budget, clean shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bci.errors import ServiceError
from bci.service import RestartPolicy, Service, State, Supervisor

FAST = RestartPolicy(max_restarts=2, window_s=60, backoff_min_s=0.01, backoff_max_s=0.02)


class Recorder(Service):
    """Becomes ready, then runs until cancelled; logs its lifecycle in a shared list."""

    def __init__(self, name: str, log: list[str], depends_on: tuple[str, ...] = ()) -> None:
        self.name = name
        self.depends_on = depends_on
        self.log = log

    async def run(self, ready: Callable[[], None]) -> None:
        self.log.append(f"start {self.name}")
        ready()
        try:
            await asyncio.Event().wait()
        finally:
            self.log.append(f"stop {self.name}")


class Flaky(Service):
    """Fails its first ``failures`` runs, then behaves."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.healthy = asyncio.Event()

    async def run(self, ready: Callable[[], None]) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        ready()
        self.healthy.set()
        await asyncio.Event().wait()


async def test_starts_in_dependency_order_and_stops_in_reverse() -> None:
    log: list[str] = []
    services = [
        Recorder("loop", log, ("publisher", "rig")),
        Recorder("publisher", log, ("broker",)),
        Recorder("rig", log),
        Recorder("broker", log),
    ]
    sup = Supervisor(services, FAST, handle_signals=False)
    run = asyncio.create_task(sup.run())
    await sup.wait_ready("loop")
    starts = [e for e in log if e.startswith("start")]
    assert starts.index("start broker") < starts.index("start publisher")
    assert starts.index("start publisher") < starts.index("start loop")
    assert starts.index("start rig") < starts.index("start loop")
    assert all(h["state"] == "ready" for h in sup.health().values())
    sup.request_stop("test over")
    await asyncio.wait_for(run, 5)
    stops = [e for e in log if e.startswith("stop")]
    assert stops.index("stop loop") < stops.index("stop publisher") < stops.index("stop broker")
    assert all(sup.state(s.name) == State.STOPPED for s in services)
    assert sup.stop_reason == "test over"


async def test_failed_service_is_restarted_and_the_incident_is_visible() -> None:
    flaky = Flaky(failures=2)
    states: list[tuple[str, State]] = []
    sup = Supervisor(
        [flaky], FAST, handle_signals=False, on_state=lambda n, s: states.append((n, s))
    )
    run = asyncio.create_task(sup.run())
    await asyncio.wait_for(flaky.healthy.wait(), 5)
    health = sup.health()["flaky"]
    assert health["state"] == "ready"
    assert health["restarts"] == 2
    assert health["last_error"] == "RuntimeError: boom 2"
    assert [i.error for i in sup.incidents] == ["RuntimeError: boom 1", "RuntimeError: boom 2"]
    assert ("flaky", State.BACKOFF) in states
    sup.request_stop()
    await asyncio.wait_for(run, 5)


async def test_service_that_keeps_failing_stops_the_pipeline_with_a_clear_message() -> None:
    log: list[str] = []
    flaky = Flaky(failures=100)
    other = Recorder("other", log)
    sup = Supervisor([other, flaky], FAST, handle_signals=False)
    with pytest.raises(ServiceError, match=r"service 'flaky' failed 3 times .* boom 3"):
        await asyncio.wait_for(sup.run(), 10)
    assert flaky.runs == 3  # the first run and two restarts, then no more
    assert sup.state("flaky") == State.FATAL
    assert "stop other" in log  # everything else was shut down cleanly


async def test_duration_ends_the_run() -> None:
    log: list[str] = []
    sup = Supervisor([Recorder("a", log)], FAST, handle_signals=False)
    await asyncio.wait_for(sup.run(duration_s=0.2), 5)
    assert log == ["start a", "stop a"]
    assert "duration" in sup.stop_reason


def test_bad_graphs_are_refused() -> None:
    log: list[str] = []
    with pytest.raises(ServiceError, match="unknown"):
        Supervisor([Recorder("a", log, ("ghost",))])
    with pytest.raises(ServiceError, match="cycle"):
        Supervisor([Recorder("a", log, ("b",)), Recorder("b", log, ("a",))])
    with pytest.raises(ServiceError, match="unique"):
        Supervisor([Recorder("a", log), Recorder("a", log)])
