"""Services and their supervisor.

A :class:`Service` is a long-running asyncio activity with a lifecycle: it is started,
says when it is *ready*, runs until cancelled, and cleans up in its own ``finally``.
The :class:`Supervisor` starts services in dependency order (a service starts once
everything it depends on is ready), restarts a service that raises after a jittered
exponential backoff while its restart budget lasts, stops the whole pipeline with a
clear :class:`~bci.errors.ServiceError` once a budget is spent, and shuts everything
down in reverse order on SIGINT/SIGTERM or when asked. Every lifecycle change is logged
and reported to ``on_state`` (for MQTT status, a progress display or a test), and
:meth:`Supervisor.health` returns a snapshot with each service's state, restarts and
last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from bci.clock import now
from bci.errors import ServiceError
from bci.schema import StrictModel

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    """Lifecycle states a service passes through."""

    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"  # failed, waiting to be restarted
    STOPPING = "stopping"
    STOPPED = "stopped"
    FATAL = "fatal"  # failed and out of restarts


class RestartPolicy(StrictModel):
    """How a failed service is restarted: at most ``max_restarts`` within ``window_s``,
    each after a backoff that doubles from ``backoff_min_s`` up to ``backoff_max_s``
    (with ±25 % jitter)."""

    max_restarts: int = Field(3, ge=0, le=1000)
    window_s: float = Field(60.0, gt=0)
    backoff_min_s: float = Field(0.1, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    ready_timeout_s: float = Field(30.0, gt=0)


class Service(ABC):
    """A long-running part of the system (an inlet, the hot path, a driver, ...).

    Subclasses implement :meth:`run`, call ``ready()`` once they can do their job, and
    release what they hold in a ``finally`` (cancellation is how they are stopped).
    ``depends_on`` names the services that must be ready first.
    """

    name: str = "service"
    depends_on: tuple[str, ...] = ()

    @abstractmethod
    async def run(self, ready: Callable[[], None]) -> None:
        """Run until cancelled (or return when the work is done)."""

    def metrics(self) -> dict[str, Any]:
        """Counters and figures for health output (override)."""
        return {}


@dataclass
class Incident:
    """A service failure: LSL time, the error, and what the supervisor did about it."""

    service: str
    time: float
    error: str
    action: str


@dataclass
class _Slot:
    service: Service
    state: State = State.CREATED
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: list[float] = field(default_factory=list)
    last_error: str | None = None
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Starts, watches, restarts and stops a set of services.

    Use ``await supervisor.run(duration_s)``: it returns when the duration has passed,
    :meth:`request_stop` was called, a signal arrived, or every service finished; it
    raises :class:`ServiceError` when a service exhausted its restart budget.
    """

    def __init__(
        self,
        services: Sequence[Service],
        policy: RestartPolicy | None = None,
        *,
        on_state: Callable[[str, State], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ServiceError(f"service names must be unique, got {names}")
        self.policy = policy or RestartPolicy()
        self._slots = {s.name: _Slot(s) for s in services}
        self._order = self._topological(services)
        self._on_state = on_state
        self._handle_signals = handle_signals
        self._stop = asyncio.Event()
        self._fatal: ServiceError | None = None
        self.incidents: list[Incident] = []
        self.stop_reason = ""

    @staticmethod
    def _topological(services: Sequence[Service]) -> list[str]:
        known = {s.name for s in services}
        deps = {s.name: set(s.depends_on) for s in services}
        for name, needs in deps.items():
            missing = needs - known
            if missing:
                raise ServiceError(f"service {name!r} depends on unknown {sorted(missing)}")
        order: list[str] = []
        while deps:
            free = [n for n, needs in deps.items() if needs <= set(order)]
            if not free:
                raise ServiceError(f"dependency cycle among {sorted(deps)}")
            for n in free:
                order.append(n)
                del deps[n]
        return order

    # ------------------------------------------------------------------ state

    def _set(self, slot: _Slot, state: State) -> None:
        if slot.state == state:
            return
        slot.state = state
        log.info("service %s: %s", slot.service.name, state.value)
        if self._on_state is not None:
            self._on_state(slot.service.name, state)

    def state(self, name: str) -> State:
        return self._slots[name].state

    def health(self) -> dict[str, dict[str, Any]]:
        """Each service's state, restart count, last error and own metrics."""
        return {
            name: {
                "state": slot.state.value,
                "restarts": len(slot.restarts),
                "last_error": slot.last_error,
                **slot.service.metrics(),
            }
            for name, slot in self._slots.items()
        }

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask for a clean shutdown (safe to call from a signal handler or callback)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
        self._stop.set()

    async def wait_ready(self, name: str) -> None:
        await self._slots[name].ready.wait()

    # ------------------------------------------------------------------ running

    async def run(self, duration_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self._handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.request_stop, f"signal {sig.name}")
                    installed.append(sig)
        try:
            async with asyncio.TaskGroup() as tg:
                for name in self._order:
                    slot = self._slots[name]
                    await self._wait_dependencies(slot)
                    if self._stop.is_set():
                        break
                    slot.task = tg.create_task(self._supervise(slot), name=f"svc-{name}")
                waiter = tg.create_task(self._stop.wait(), name="svc-stop-wait")
                done = tg.create_task(self._all_done(), name="svc-all-done")
                if duration_s is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(duration_s):
                            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
                    self.request_stop(self.stop_reason or f"duration {duration_s:g} s reached")
                else:
                    await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
                    self.request_stop(self.stop_reason or "all services finished")
                await self._shutdown()
                waiter.cancel()
                done.cancel()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise self._fatal

    async def _wait_dependencies(self, slot: _Slot) -> None:
        for dep in slot.service.depends_on:
            dep_slot = self._slots[dep]
            ready = asyncio.ensure_future(dep_slot.ready.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                async with asyncio.timeout(self.policy.ready_timeout_s):
                    await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                self._fail_fatal(
                    slot,
                    f"{slot.service.name!r} gave up waiting {self.policy.ready_timeout_s:g} s "
                    f"for {dep!r} to be ready",
                )
            finally:
                ready.cancel()
                stop.cancel()

    async def _all_done(self) -> None:
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _supervise(self, slot: _Slot) -> None:
        svc = slot.service
        backoff = self.policy.backoff_min_s
        while not self._stop.is_set():
            self._set(slot, State.STARTING)
            slot.ready.clear()

            def ready(slot: _Slot = slot) -> None:
                slot.ready.set()
                self._set(slot, State.READY)

            started = time.monotonic()
            try:
                await svc.run(ready)
            except asyncio.CancelledError:
                self._set(slot, State.STOPPED)
                raise
            except Exception as exc:  # a service failure: restart it or stop everything
                slot.last_error = f"{type(exc).__name__}: {exc}"
                log.error("service %s failed: %s", svc.name, slot.last_error)
                log.debug("service %s failure", svc.name, exc_info=exc)
                t = time.monotonic()
                slot.restarts = [r for r in slot.restarts if t - r < self.policy.window_s]
                if len(slot.restarts) >= self.policy.max_restarts:
                    self._fail_fatal(
                        slot,
                        f"service {svc.name!r} failed {len(slot.restarts) + 1} times within "
                        f"{self.policy.window_s:g} s (last: {slot.last_error}); stopping the "
                        "pipeline",
                    )
                    return
                if t - started > self.policy.window_s:
                    backoff = self.policy.backoff_min_s  # it ran well for a while
                slot.restarts.append(t)
                delay = min(backoff, self.policy.backoff_max_s) * random.uniform(0.75, 1.25)
                self.incidents.append(
                    Incident(svc.name, now(), slot.last_error, f"restart in {delay:.2f} s")
                )
                self._set(slot, State.BACKOFF)
                backoff = min(backoff * 2, self.policy.backoff_max_s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                continue
            else:
                self._set(slot, State.STOPPED)
                return

    def _fail_fatal(self, slot: _Slot, message: str) -> None:
        self._set(slot, State.FATAL)
        self.incidents.append(Incident(slot.service.name, now(), slot.last_error or "", "fatal"))
        if self._fatal is None:
            self._fatal = ServiceError(message, service=slot.service.name)
        self.request_stop(message)

    async def _shutdown(self) -> None:
        """Cancel services in reverse dependency order, each fully before the next."""
        for name in reversed(self._order):
            slot = self._slots[name]
            task = slot.task
            if task is None or task.done():
                continue
            self._set(slot, State.STOPPING)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._set(slot, State.STOPPED)
