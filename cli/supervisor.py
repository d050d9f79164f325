"""The supervisor behind `streamctl up`: builds the plant, keeps it running, takes it down.

Start order: sweep stale segments, check /dev/shm room, create every ring, registry and the
process table, then start the hub (public endpoint), the workers, then the feeds, each pinned
to its core, and wait until each reports READY. While running: a child that dies or stops
heartbeating is restarted with backoff and counted; one that keeps dying is marked FAILED with
the reason. Stop order: feeds, then workers (they drain their rings and flush open bars), then
the hub; then every segment is unlinked and the manifest removed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from streamctl.bus.hub import HubSpec, hub_main
from streamctl.cli.config import PlantConfig, SupervisionConfig
from streamctl.cli.runtime import internal_endpoint, pid_alive, read_manifest, remove_manifest, write_manifest
from streamctl.ingest.feed import EXIT_FAILED, FeedSpec, feed_main
from streamctl.process.worker import RingSource, WorkerSpec, worker_main

__all__ = ["PlantError", "Supervisor", "RestartPolicy"]

log = logging.getLogger("streamctl.supervisor")

_REGISTRY_CAPACITY = 65536


class PlantError(RuntimeError):
    """The plant cannot start (or a child failed to become ready); the message says why."""


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.2
    max_delay: float = 5.0
    window: float = 30.0
    """A child dying `max_deaths` times within `window` seconds is marked failed."""
    max_deaths: int = 5
    heartbeat_timeout: float = 10.0
    """A READY child whose heartbeat is older than this is killed and restarted."""
    ready_timeout: float = 90.0

    @classmethod
    def from_config(cls, config: SupervisionConfig, **overrides: float) -> RestartPolicy:
        values = dict(first_delay=config.first_restart_delay, max_delay=config.max_restart_delay,
                      window=config.restart_window, max_deaths=config.max_restarts,
                      heartbeat_timeout=config.heartbeat_timeout, ready_timeout=config.ready_timeout)
        values.update(overrides)
        return cls(**values)


@dataclass
class Child:
    name: str
    role: str
    slot: int
    target: Callable[[Any], None]
    spec: Any
    process: Any = None
    restarts: int = 0
    deaths: deque = field(default_factory=deque)
    restart_at: float | None = None
    failed: bool = False
    done: bool = False
    last_reason: str = ""


class Supervisor:
    """One plant. `start()`, then `step()` periodically (or `run()`), then `stop()`."""

    def __init__(self, config: PlantConfig, *, config_path: str | None = None, live: bool = True,
                 policy: RestartPolicy | None = None):
        self.config = config
        self.config_path = config_path
        self.live = live
        self.policy = policy or RestartPolicy.from_config(config.supervision)
        self.name = config.name
        self.children: list[Child] = []
        self.rings: dict[str, Any] = {}
        self.registries: dict[str, Any] = {}
        self.table = None
        self.stop_requested = False
        self._publisher = None
        self._stopped = False
        self._manifest: dict[str, Any] = {}
        self._last_sample = 0.0
        self._prev_counts: dict[int, tuple[int, int, float]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._ctx = mp.get_context("forkserver")
        # Children fork from a server that has imported everything and loaded every kernel.
        self._ctx.set_forkserver_preload(["streamctl.cli.preload"])

    # ------------------------------------------------------------------ start
    def start(self, *, before_feeds: Callable[[], None] | None = None) -> None:
        """Build and start the plant; `before_feeds` runs once the hub and workers are ready
        (e.g. to connect a recorder that must not miss the first message)."""
        from streamctl.shm import segments
        from streamctl.shm.registry import SymbolRegistry, registry_bytes
        from streamctl.shm.ring import Ring, ring_bytes
        from streamctl.shm.stats import ProcessTable, stats_bytes

        cfg = self.config
        existing = read_manifest(self.name)
        if existing and pid_alive(existing.get("supervisor_pid", 0), existing.get("supervisor_started")):
            raise PlantError(f"plant `{self.name}` is already running (supervisor pid {existing['supervisor_pid']}); "
                             f"`streamctl down --name {self.name}` first, or give this config another `name`")
        removed = segments.sweep()
        if removed:
            log.info("removed %d stale segment(s) left by dead plants: %s", len(removed), ", ".join(removed))
        remove_manifest(self.name)
        n_parts, feeds = cfg.partitions.count, cfg.feeds
        n_slots = 1 + n_parts + len(feeds)
        segments.check_room(len(feeds) * n_parts * ring_bytes(cfg.rings.capacity)
                            + len(feeds) * registry_bytes(_REGISTRY_CAPACITY) + stats_bytes(n_slots))

        self.endpoint_internal = internal_endpoint(self.name)
        self._manifest = {
            "name": self.name, "config": os.path.abspath(self.config_path) if self.config_path else None,
            "supervisor_pid": os.getpid(), "supervisor_started": psutil.Process().create_time(),
            "endpoint": cfg.publish.endpoint, "internal": self.endpoint_internal, "state": "starting",
            "stats": segments.segment_name(self.name, "stats"), "rings": [], "registries": [],
            "log": os.environ.get("STREAMCTL_LOG_FILE"),
        }
        write_manifest(self.name, self._manifest)
        try:
            self.table = ProcessTable.create(self._manifest["stats"], n_slots, plant=self.name)
            for feed in feeds:
                reg_name = segments.segment_name(self.name, "sym", feed.name)
                self.registries[feed.name] = SymbolRegistry.create(reg_name, capacity=_REGISTRY_CAPACITY, plant=self.name)
                self._manifest["registries"].append(reg_name)
                for p in range(n_parts):
                    ring_name = segments.segment_name(self.name, "ring", feed.name, f"p{p}")
                    self.rings[ring_name] = Ring.create(ring_name, cfg.rings.capacity, overflow=cfg.rings.overflow,
                                                        plant=self.name)
                    self._manifest["rings"].append({"name": ring_name, "feed": feed.name, "partition": p})
            write_manifest(self.name, self._manifest)
            self._plan_children()
            from streamctl.bus.publisher import Publisher

            for role in ("hub", "worker", "ingest"):
                if role == "ingest" and before_feeds is not None:
                    before_feeds()
                group = [c for c in self.children if c.role == role]
                for child in group:
                    self._start_child(child)
                self._wait_ready(group)
                if role == "hub":
                    self._publisher = Publisher(self.endpoint_internal, src="supervisor")
            self._manifest["state"] = "ready"
            write_manifest(self.name, self._manifest)
        except BaseException:
            self.stop()
            raise

    def _plan_children(self) -> None:
        cfg, n_parts = self.config, self.config.partitions.count
        cores = list(range(os.cpu_count() or 1))
        next_core = iter(cores * (n_parts + len(cfg.feeds) + 1))
        stats = self._manifest["stats"]
        self.children.append(Child("hub", "hub", 0, hub_main, HubSpec(
            plant=self.name, slot=0, stats=stats, internal=self.endpoint_internal, public=cfg.publish.endpoint,
            sndhwm=cfg.publish.sndhwm)))
        feed_cores = [f.cpu if f.cpu is not None else next(next_core) for f in cfg.feeds]
        for p in range(n_parts):
            cpu = cfg.partitions.cpus[p] if cfg.partitions.cpus else next(next_core)
            sources = [RingSource(feed=f.name, ring=segment_for(self._manifest, f.name, p),
                                  registry=self.registries[f.name].name) for f in cfg.feeds]
            spec = WorkerSpec(plant=self.name, partition=p, slot=1 + p, sources=sources, stats=stats,
                              endpoint=self.endpoint_internal, calculators=cfg.calculators,
                              raw_trades=cfg.publish.raw_trades, raw_quotes=cfg.publish.raw_quotes,
                              sndhwm=cfg.publish.sndhwm, live=self.live, cpu=cpu,
                              max_idle_sleep=cfg.partitions.idle_sleep_us * 1e-6)
            self.children.append(Child(spec.name, "worker", 1 + p, worker_main, spec))
        for i, feed in enumerate(cfg.feeds):
            slot = 1 + n_parts + i
            spec = FeedSpec(plant=self.name, name=feed.name, slot=slot, feed=feed, partitions=n_parts,
                            rings=[segment_for(self._manifest, feed.name, p) for p in range(n_parts)],
                            registry=self.registries[feed.name].name, stats=stats,
                            events_endpoint=self.endpoint_internal, cpu=feed_cores[i])
            self.children.append(Child(feed.name, "ingest", slot, feed_main, spec))
        for child in self.children:
            slot = self.table.slot(child.slot)
            slot.set("name", child.name)
            slot.set("role", child.role)
            slot.set("cpu", -1)

    def _start_child(self, child: Child) -> None:
        from streamctl.shm.stats import State

        slot = self.table.slot(child.slot)
        slot.set("state", State.STARTING)
        slot.set("heartbeat_ns", time.time_ns())
        child.process = self._ctx.Process(target=child.target, args=(child.spec,), name=f"streamctl-{child.name}",
                                          daemon=False)
        child.process.start()
        self._procs.pop(child.slot, None)

    def _wait_ready(self, group: list[Child]) -> None:
        from streamctl.shm.stats import State

        deadline = time.monotonic() + self.policy.ready_timeout
        pending = list(group)
        while pending:
            for child in list(pending):
                state = State(int(self.table.slot(child.slot).get("state")))
                if state == State.READY or (state == State.EXITED and child.role == "ingest"):
                    pending.remove(child)
                elif child.process.exitcode is not None or state == State.FAILED:
                    detail = self.table.slot(child.slot).get("detail") or f"exit code {child.process.exitcode}"
                    raise PlantError(f"{child.role} `{child.name}` failed to start: {detail}")
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise PlantError(f"not ready after {self.policy.ready_timeout:.0f} s: {names}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ supervise
    def step(self) -> None:
        """One supervision pass: reap, restart, sample rates, publish status."""
        from streamctl.shm.stats import State

        now = time.monotonic()
        for child in self.children:
            if child.failed or child.done:
                continue
            slot = self.table.slot(child.slot)
            proc = child.process
            if proc is not None and proc.exitcode is None:
                state = State(int(slot.get("state")))
                age = (time.time_ns() - int(slot.get("heartbeat_ns"))) / 1e9
                if state == State.READY and age > self.policy.heartbeat_timeout:
                    self._event("restart", f"{child.name} stopped heartbeating ({age:.1f} s); killing it")
                    proc.kill()
                    proc.join(2)
                continue
            if proc is not None:
                self._on_exit(child, proc.exitcode, slot)
                child.process = None
            if child.restart_at is not None and now >= child.restart_at and not child.failed:
                child.restart_at = None
                child.restarts += 1
                slot.set("restarts", child.restarts)
                slot.set("detail", f"restarted; last exit: {child.last_reason}"[:95])
                self._start_child(child)
        if now - self._last_sample >= 1.0:
            self._sample(now)

    def _on_exit(self, child: Child, code: int | None, slot) -> None:
        from streamctl.shm.stats import State

        reason = _describe_exit(code)
        if child.role == "ingest" and code == 0 and State(int(slot.get("state"))) == State.EXITED:
            child.done = True
            self._event("done", f"feed {child.name} finished its input")
            return
        if child.role == "ingest" and code == EXIT_FAILED:
            child.failed = True
            slot.set("state", State.FAILED)
            self._event("failed", f"feed {child.name} gave up: {slot.get('detail')}")
            return
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > self.policy.window:
            child.deaths.popleft()
        child.last_reason = reason
        if len(child.deaths) >= self.policy.max_deaths:
            child.failed = True
            slot.set("state", State.FAILED)
            detail = f"died {len(child.deaths)} times in {self.policy.window:.0f} s; last {reason}"
            slot.set("detail", detail[:95])
            self._event("failed", f"{child.name} {detail}; not restarting")
            return
        delay = min(self.policy.first_delay * 2 ** (len(child.deaths) - 1), self.policy.max_delay)
        child.restart_at = now + delay
        slot.set("state", State.EXITED)
        slot.set("detail", f"{reason}; restarting in {delay:.1f} s"[:95])
        self._event("restart", f"{child.name} {reason}; restarting in {delay:.1f} s")

    def _sample(self, now: float) -> None:
        """Per-second rates, RSS and CPU% into the table, and `status.*` messages."""
        self._last_sample = now
        for child in self.children:
            slot = self.table.slot(child.slot)
            rin, rout = int(slot.get("records_in")), int(slot.get("records_out"))
            prev = self._prev_counts.get(child.slot)
            if prev is not None and now > prev[2]:
                slot.set("rate_in", max(rin - prev[0], 0) / (now - prev[2]))
                slot.set("rate_out", max(rout - prev[1], 0) / (now - prev[2]))
            self._prev_counts[child.slot] = (rin, rout, now)
            proc = child.process
            if proc is None or proc.pid is None:
                continue
            try:
                ps = self._procs.get(child.slot)
                if ps is None or ps.pid != proc.pid:
                    ps = self._procs[child.slot] = psutil.Process(proc.pid)
                    ps.cpu_percent(None)
                slot.set("rss", ps.memory_info().rss)
                slot.set("cpu_pct", ps.cpu_percent(None))
            except psutil.Error:
                pass
        if self._publisher is not None:
            self._publish_status()

    def _publish_status(self) -> None:
        from streamctl.bus.wire import Status, topic
        from streamctl.cli.status import collect_status

        status = collect_status(self._manifest, table=self.table, rings=self.rings)
        now = time.time_ns()
        for p in status["processes"]:
            self._publisher.publish(topic("status", p["name"]), Status(
                name=p["name"], role=p["role"], pid=p["pid"], alive=p["alive"], restarts=p["restarts"],
                records_in=p["records_in"], records_out=p["records_out"], rate_in=p["rate_in"],
                rate_out=p["rate_out"], drops=p["drops"], ts=now))

    def _event(self, kind: str, message: str) -> None:
        level = logging.WARNING if kind in {"restart", "failed"} else logging.INFO
        if kind != "probe":
            log.log(level, "%s", message)
        if self._publisher is not None:
            from streamctl.bus.wire import Event, topic

            self._publisher.publish(topic("event", "supervisor"),
                                    Event(source="supervisor", kind=kind, message=message, ts=time.time_ns()))

    def status(self) -> dict[str, Any]:
        from streamctl.cli.status import collect_status

        return collect_status(self._manifest, table=self.table, rings=self.rings)

    def feeds_finished(self) -> bool:
        return all(c.done or c.failed for c in self.children if c.role == "ingest")

    def rings_drained(self) -> bool:
        return all(ring.fill == 0 for ring in self.rings.values())

    # ------------------------------------------------------------------ run / stop
    def run(self, *, duration: float | None = None, on_tick: Callable[[], None] | None = None,
            stop_when_done: bool = False) -> None:
        """Supervise until a signal, `duration` seconds, or (with `stop_when_done`) every feed finished
        and every ring is drained."""
        end = None if duration is None else time.monotonic() + duration
        next_tick = 0.0
        while not self.stop_requested:
            self.step()
            now = time.monotonic()
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + 1.0
            if end is not None and now >= end:
                break
            if stop_when_done and self.feeds_finished() and self.rings_drained():
                break
            time.sleep(0.05)

    def install_signal_handlers(self) -> None:
        def on_signal(signum, frame):  # noqa: ARG001
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def publish_event(self, kind: str, message: str) -> None:
        """Publish ``event.supervisor`` (also used as a probe by recorders)."""
        self._event(kind, message)

    def stop(self, timeout: float = 10.0, *, before_hub: Callable[[], None] | None = None) -> None:
        """Ordered, idempotent stop; unlinks every segment and removes the manifest.

        `before_hub` runs after feeds and workers have exited and before the hub closes (a
        recorder waits there for the workers' last messages)."""
        if self._stopped:
            return
        self._stopped = True
        if self._manifest:
            self._manifest["state"] = "stopping"
            try:
                write_manifest(self.name, self._manifest)
            except OSError:
                pass
        for role in ("ingest", "worker", "hub"):
            if role == "hub" and before_hub is not None:
                try:
                    before_hub()
                except Exception:
                    log.exception("before_hub")
            group = [c for c in self.children if c.role == role and c.process is not None]
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
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        for ring in self.rings.values():
            _quietly(ring.unlink)
            _quietly(ring.close)
        for reg in self.registries.values():
            _quietly(reg.unlink)
            _quietly(reg.close)
        if self.table is not None:
            _quietly(self.table.unlink)
            _quietly(self.table.close)
        if not self._manifest:
            return  # this supervisor never got as far as writing a manifest: nothing of it to remove
        remove_manifest(self.name)
        path = self._manifest.get("internal", "").removeprefix("ipc://")
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


def segment_for(manifest: dict[str, Any], feed: str, partition: int) -> str:
    for entry in manifest["rings"]:
        if entry["feed"] == feed and entry["partition"] == partition:
            return entry["name"]
    raise KeyError((feed, partition))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup goes on whatever one segment says
        log.debug("cleanup: %s", exc)
