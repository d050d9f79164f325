"""The supervisor behind `streamctl up`: builds the plant, keeps it running, takes it down.

A facade over four parts with one job each: `plan` (config -> process specs), `provision`
(segments, endpoint, manifest), `supervise` (start, heartbeats, restarts) and `report`
(sampling, status), plus the optional Prometheus endpoint (`metrics`). Start order: provision everything, then the hub, the workers, the feeds,
each waiting until READY. Stop order: feeds, then workers (they drain their rings and flush
open bars), then the hub; then every segment is unlinked and the manifest removed.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamctl.bus.curve import plant_keys
from streamctl.cli.config import MetricsConfig, PlantConfig
from streamctl.cli.plan import START_ORDER, Layout, plan_processes
from streamctl.cli.provision import PlantError, Provision
from streamctl.cli.report import Reporter
from streamctl.cli.status import collect_status

if TYPE_CHECKING:
    from streamctl.cli.metrics import MetricsServer
from streamctl.cli.supervise import RestartPolicy, Supervision
from streamctl.shm.stats import Role

__all__ = ["PlantError", "Supervisor", "RestartPolicy"]

log = logging.getLogger("streamctl.supervisor")

_SAMPLE_PERIOD = 1.0
"""Seconds between samples of rates, memory and CPU% (and `status.*` messages)."""


class Supervisor:
    """One plant. `start()`, then `step()` periodically (or `run()`), then `stop()`."""

    def __init__(self, config: PlantConfig, *, config_path: str | None = None, live: bool = True,
                 policy: RestartPolicy | None = None):
        self.config = config
        self.name = config.name
        self.policy = policy or RestartPolicy.from_config(config.supervision)
        self.live = live
        self.stop_requested = False
        self._layout = Layout.of(config)
        self._keys = plant_keys()  # fresh per run: only this run's processes may publish into its hub
        self.run_id = time.time_ns()
        """This run: a restarted worker replays the journal files of its own run only."""
        self._plans = plan_processes(config, self._layout, self._keys, live=live, run=self.run_id)
        self._provision = Provision(config, self._layout, slots=len(self._plans), config_path=config_path,
                                    live=live)
        self._supervision: Supervision | None = None
        self._reporter = Reporter()
        self._metrics: MetricsServer | None = None
        self._last_sample = 0.0
        self._stopped = False

    # ------------------------------------------------------------------ start
    def start(self, *, before_feeds: Callable[[], None] | None = None,
              on_wait: Callable[[list[str]], None] | None = None) -> None:
        """Build and start the plant; `before_feeds` runs once the hub and workers are ready
        (e.g. to connect a recorder that must not miss the first message); `on_wait` is told
        the processes not ready yet while it waits (start-up progress)."""
        try:
            self._provision.create()  # refuses a running plant of this name before touching anything
            assert self._provision.table is not None
            if self.config.metrics is not None:
                self._start_metrics(self.config.metrics)
            self._supervision = Supervision(self._plans, self._provision.table, self.policy,
                                            on_event=self._reporter.event)
            for role in START_ORDER:
                if role == Role.INGEST and before_feeds is not None:
                    before_feeds()
                self._supervision.start_role(role, on_wait=on_wait)
                if role == Role.HUB:
                    self._reporter.connect(self._layout.internal, self._keys[1])
            self._provision.set_state("ready")
        except BaseException:
            self.stop()
            raise

    def _start_metrics(self, config: MetricsConfig) -> None:
        from streamctl.cli.metrics import MetricsServer

        self._metrics = MetricsServer(config, self.status)
        try:
            self._metrics.start()
        except OSError as exc:
            self._metrics = None
            raise PlantError(f"`metrics.listen` {config.listen}: cannot serve there ({exc.strerror or exc})") from None
        log.info("metrics at http://%s/metrics", config.listen)

    # ------------------------------------------------------------------ supervise
    def step(self) -> None:
        """One supervision pass: reap, restart, sample rates, publish status."""
        if self._supervision is None:
            return
        self._supervision.check()
        now = time.monotonic()
        if now - self._last_sample >= _SAMPLE_PERIOD:
            self._last_sample = now
            self._reporter.sample(self._supervision.children, now)
            if self._reporter.publishing:
                self._reporter.publish_status(self.status())

    def status(self) -> dict[str, Any]:
        return collect_status(self._provision.manifest, table=self._provision.table, rings=self._provision.rings)

    def feeds_finished(self) -> bool:
        return self._supervision is not None and self._supervision.feeds_finished()

    def rings_drained(self) -> bool:
        return self._provision.rings_drained()

    def publish_event(self, kind: str, message: str) -> None:
        """Publish ``event.supervisor`` (also used as a probe by recorders)."""
        self._reporter.event(kind, message)

    # ------------------------------------------------------------------ run / stop
    def run(self, *, duration: float | None = None, on_tick: Callable[[], None] | None = None,
            stop_when_done: bool = False, period: float = 0.05) -> None:
        """Supervise until a signal, `duration` seconds, or (with `stop_when_done`) every feed finished
        and every ring is drained; a pass every `period` seconds."""
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
            time.sleep(period)

    def install_signal_handlers(self) -> None:
        def on_signal(signum, frame):  # noqa: ARG001
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def stop(self, timeout: float = 10.0, *, before_hub: Callable[[], None] | None = None) -> None:
        """Ordered, idempotent stop; unlinks every segment and removes the manifest.

        `before_hub` runs after feeds and workers have exited and before the hub closes (a
        recorder waits there for the workers' last messages)."""
        if self._stopped:
            return
        self._stopped = True
        self._provision.set_state("stopping")
        try:
            if self._supervision is not None:
                for role in reversed(START_ORDER):
                    if role == Role.HUB and before_hub is not None:
                        try:
                            before_hub()
                        except Exception:
                            log.exception("before_hub")
                    self._supervision.stop_role(role, timeout)
        finally:  # whatever stopping the children raised, the segments and sockets go
            self._reporter.close()
            if self._metrics is not None:
                self._metrics.close()  # before the segments it reads are unmapped
            self._provision.release()
