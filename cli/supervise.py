"""Supervise: start the planned processes, keep them alive, stop them in order.

A child that dies or stops heartbeating is restarted with exponential backoff and counted; one
that dies `max_deaths` times within `window` seconds is marked FAILED with the reason, so a
crash loop shows in `status` instead of burning a core. A feed that finished its input (or
gave up, exit `EXIT_FAILED`) and a sink that gave up on its store are not restarted. Children fork from a forkserver that has
already imported everything and loaded every kernel, so a restart takes well under a second.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamctl.cli import forkserver
from streamctl.cli.config import SupervisionConfig
from streamctl.cli.plan import ProcessPlan
from streamctl.cli.provision import PlantError
from streamctl.ingest.feed import EXIT_FAILED
from streamctl.shm.stats import ProcessSlot, ProcessTable, Role, State
from streamctl.sinks.process import EXIT_FAILED as SINK_FAILED

__all__ = ["RestartPolicy", "Child", "Supervision"]

log = logging.getLogger("streamctl.supervisor")

_RUNNING = frozenset({State.READY, State.RECONNECTING})
"""Started and expected to heartbeat (a reconnecting feed heartbeats while it retries)."""

_READY_POLL = 0.005
"""Seconds between looks at the starting children's states (a child is ready in tens of ms)."""

EventSink = Callable[[str, str], None]
"""Receives (event kind, message) for ``event.supervisor``."""


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.2
    max_delay: float = 5.0
    window: float = 30.0
    """A child dying `max_deaths` times within `window` seconds is marked failed."""
    max_deaths: int = 5
    heartbeat_timeout: float = 10.0
    """A READY (or RECONNECTING) child whose heartbeat is older than this is killed and restarted."""
    ready_timeout: float = 300.0

    @classmethod
    def from_config(cls, config: SupervisionConfig, **overrides: float) -> RestartPolicy:
        values: dict[str, Any] = dict(
            first_delay=config.first_restart_delay, max_delay=config.max_restart_delay,
            window=config.restart_window, max_deaths=config.max_restarts,
            heartbeat_timeout=config.heartbeat_timeout, ready_timeout=config.ready_timeout)
        values.update(overrides)
        return cls(**values)

    def restart_delay(self, recent_deaths: int) -> float:
        """Backoff: `first_delay` doubled per recent death, at most `max_delay`."""
        return min(self.first_delay * 2 ** (recent_deaths - 1), self.max_delay)


@dataclass
class Child:
    """A planned process and what supervision knows of its current incarnation."""

    plan: ProcessPlan
    slot: ProcessSlot
    process: Any = None
    restarts: int = 0
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    failed: bool = False
    done: bool = False
    last_reason: str = ""

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def role(self) -> Role:
        return self.plan.role

    def state(self) -> State:
        return State(int(self.slot.get("state")))

    def heartbeat_age(self) -> float:
        """Seconds since the child last wrote its heartbeat."""
        return (time.time_ns() - int(self.slot.get("heartbeat_ns"))) / 1e9

    def mark_failed(self) -> None:
        self.failed = True
        self.slot.set("state", State.FAILED)


class Supervision:
    """The children of one plant: start a role, check them all, stop a role."""

    def __init__(self, plans: list[ProcessPlan], table: ProcessTable, policy: RestartPolicy, *,
                 on_event: EventSink):
        self.policy = policy
        self._on_event = on_event
        self._ctx = forkserver.start()
        self.children = [Child(plan, table.slot(plan.slot)) for plan in plans]
        for child in self.children:
            child.slot.set("name", child.name)
            child.slot.set("role", child.role)
            child.slot.set("cpu", -1)

    def of_role(self, role: Role) -> list[Child]:
        return [c for c in self.children if c.role == role]

    # ------------------------------------------------------------------ start
    def start_role(self, role: Role, *, on_wait: Callable[[list[str]], None] | None = None) -> None:
        """Start every child of `role` and wait until each reports READY (a feed may already be done);
        `on_wait` is told the names still pending while it waits."""
        group = self.of_role(role)
        for child in group:
            self._start(child)
        self._wait_ready(group, on_wait)

    def _start(self, child: Child) -> None:
        child.slot.set("state", State.STARTING)
        child.slot.set("heartbeat_ns", time.time_ns())
        child.process = self._ctx.Process(target=child.plan.target, args=(child.plan.spec,),
                                          name=f"streamctl-{child.name}", daemon=False)
        child.process.start()

    def _wait_ready(self, group: list[Child], on_wait: Callable[[list[str]], None] | None) -> None:
        deadline = time.monotonic() + self.policy.ready_timeout
        pending = list(group)
        while pending:
            for child in list(pending):
                state = child.state()
                if state in _RUNNING or (state == State.EXITED and child.role == Role.INGEST):
                    pending.remove(child)
                elif child.process.exitcode is not None or state == State.FAILED:
                    detail = child.slot.get("detail") or f"exit code {child.process.exitcode}"
                    raise PlantError(f"{child.role} `{child.name}` failed to start: {detail}")
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise PlantError(f"not ready after {self.policy.ready_timeout:.0f} s: {names}")
            if pending and on_wait is not None:
                on_wait([c.name for c in pending])
            time.sleep(_READY_POLL)

    # ------------------------------------------------------------------ check
    def check(self) -> None:
        """One pass: kill the silent, reap the dead, restart those whose backoff is over."""
        now = time.monotonic()
        for child in self.children:
            if child.failed or child.done:
                continue
            proc = child.process
            if proc is not None and proc.exitcode is None:
                age = child.heartbeat_age()
                if child.state() in _RUNNING and age > self.policy.heartbeat_timeout:
                    self._on_event("restart", f"{child.name} stopped heartbeating ({age:.1f} s); killing it")
                    proc.kill()
                    proc.join(2)
                continue
            if proc is not None:
                self._on_exit(child, proc.exitcode)
                child.process = None
            if child.restart_at is not None and now >= child.restart_at and not child.failed:
                child.restart_at = None
                child.restarts += 1
                child.slot.set("restarts", child.restarts)
                child.slot.set("detail", f"restarted; last exit: {child.last_reason}")
                self._start(child)

    def _on_exit(self, child: Child, code: int | None) -> None:
        if child.role == Role.INGEST and code == 0 and child.state() == State.EXITED:
            child.done = True
            self._on_event("done", f"feed {child.name} finished its input")
            return
        if (child.role, code) in ((Role.INGEST, EXIT_FAILED), (Role.SINK, SINK_FAILED)):
            child.mark_failed()
            self._on_event("failed", f"{child.role} {child.name} gave up: {child.slot.get('detail')}")
            return
        reason = _describe_exit(code)
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > self.policy.window:
            child.deaths.popleft()
        child.last_reason = reason
        if len(child.deaths) >= self.policy.max_deaths:
            child.mark_failed()
            detail = f"died {len(child.deaths)} times in {self.policy.window:.0f} s; last {reason}"
            child.slot.set("detail", detail)
            self._on_event("failed", f"{child.name} {detail}; not restarting")
            return
        delay = self.policy.restart_delay(len(child.deaths))
        child.restart_at = now + delay
        child.slot.set("state", State.EXITED)
        child.slot.set("detail", f"{reason}; restarting in {delay:.1f} s")
        self._on_event("restart", f"{child.name} {reason}; restarting in {delay:.1f} s")

    def feeds_finished(self) -> bool:
        return all(c.done or c.failed for c in self.of_role(Role.INGEST))

    # ------------------------------------------------------------------ stop
    def stop_role(self, role: Role, timeout: float) -> None:
        """SIGTERM every running child of `role`; kill those still running after `timeout` s."""
        # A child whose start a signal interrupted has a process object but no process (pid None).
        group = [c for c in self.of_role(role) if c.process is not None and c.process.pid is not None]
        for child in group:
            if child.process.exitcode is None:
                child.process.terminate()
        deadline = time.monotonic() + timeout
        for child in group:
            child.process.join(max(deadline - time.monotonic(), 0.1))
            if child.process.exitcode is None:
                log.warning("%s did not stop within %.0f s; killing it", child.name, timeout)
                child.process.kill()
                child.process.join(2)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
