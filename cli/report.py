"""Report: what the supervisor measures about the plant, made visible.

Once a second it writes into each slot what a process cannot cheaply measure about itself:
rates in and out, CPU (% and seconds) and memory: RSS, USS and PSS (RSS counts the pages every
child shares with the forkserver, so summing it overstates the plant; USS is what only that
process holds; PSS splits each shared page among its users, so it sums to the plant's total).
It publishes ``status.<process>`` and ``event.supervisor`` through the hub, so a subscriber
sees the plant's health on the same endpoint as its data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil

from streamctl.bus.curve import CurveClient
from streamctl.bus.publisher import Publisher
from streamctl.bus.wire import Event, Status, topic
from streamctl.cli.supervise import Child

__all__ = ["Reporter"]

log = logging.getLogger("streamctl.supervisor")

_QUIET_EVENTS = {"probe"}
"""Event kinds published but not logged (a recorder's sync probes)."""
_WARNING_EVENTS = {"restart", "failed"}


class Reporter:
    """Samples the children into the process table and publishes status and events."""

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        self._prev_counts: dict[int, tuple[int, int, float]] = {}
        self._procs: dict[int, tuple[Any, psutil.Process]] = {}
        """Slot -> (the child's process object, its psutil handle): a restart gets a new handle."""

    def connect(self, endpoint: str, curve: CurveClient) -> None:
        """Start publishing (once the hub takes messages at `endpoint`, with the plant's keys)."""
        self._publisher = Publisher(endpoint, src="supervisor", curve=curve)

    def sample(self, children: list[Child], now: float) -> None:
        """Per-second rates, RSS, USS and CPU% into each child's slot."""
        for child in children:
            slot = child.slot
            rin, rout = int(slot.get("records_in")), int(slot.get("records_out"))
            prev = self._prev_counts.get(child.plan.slot)
            if prev is not None and now > prev[2]:
                slot.set("rate_in", max(rin - prev[0], 0) / (now - prev[2]))
                slot.set("rate_out", max(rout - prev[1], 0) / (now - prev[2]))
            self._prev_counts[child.plan.slot] = (rin, rout, now)
            proc = child.process
            if proc is None or proc.pid is None:
                continue
            try:
                ps = self._psutil_process(child.plan.slot, proc)
                memory = ps.memory_full_info()  # one read of /proc/<pid>/smaps: rss, uss and pss agree
                slot.set("rss", memory.rss)
                slot.set("uss", memory.uss)
                slot.set("pss", getattr(memory, "pss", 0))
                slot.set("cpu_pct", ps.cpu_percent(None))
                times = ps.cpu_times()
                slot.set("cpu_seconds", times.user + times.system)
            except psutil.Error:
                pass

    def _psutil_process(self, index: int, proc: Any) -> psutil.Process:
        cached = self._procs.get(index)
        if cached is not None and cached[0] is proc:
            return cached[1]
        ps = psutil.Process(proc.pid)
        ps.cpu_percent(None)  # the first call starts the CPU% interval
        self._procs[index] = (proc, ps)
        return ps

    def publish_status(self, status: dict[str, Any]) -> None:
        """One ``status.<name>`` message per process of a `collect_status` snapshot."""
        if self._publisher is None:
            return
        now = time.time_ns()
        for p in status["processes"]:
            self._publisher.publish(topic("status", p["name"]), Status(
                name=p["name"], role=p["role"], pid=p["pid"], alive=p["alive"], restarts=p["restarts"],
                records_in=p["records_in"], records_out=p["records_out"], rate_in=p["rate_in"],
                rate_out=p["rate_out"], drops=p["drops"], ts=now, state=p["state"], cpu_pct=p["cpu_pct"],
                rss=p["rss"], detail=p["detail"]))

    @property
    def publishing(self) -> bool:
        return self._publisher is not None

    def event(self, kind: str, message: str) -> None:
        """Log `message` and publish it as ``event.supervisor``."""
        if kind not in _QUIET_EVENTS:
            log.log(logging.WARNING if kind in _WARNING_EVENTS else logging.INFO, "%s", message)
        if self._publisher is not None:
            self._publisher.publish(topic("event", "supervisor"),
                                    Event(source="supervisor", kind=kind, message=message, ts=time.time_ns()))

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
