"""Provision: what the plant holds outside its processes, made before them and removed after.

The process table, one symbol registry per feed, one ring per (feed, partition), and the run
manifest that lets `status`, `tail`, `down` and `clean` find them. Creating them first means a
child never waits for a segment; removing them in one place is what makes "nothing leaks" true
(segments a crashed plant left behind are swept by the next `up` or by `clean`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import psutil

from streamctl.bus.recovery import internal_recovery_endpoint, recovery_endpoint
from streamctl.cli.config import PlantConfig, data_dir, history_dir
from streamctl.cli.plan import Layout
from streamctl.cli.runtime import read_manifest, remove_manifest, supervisor_alive, write_manifest
from streamctl.shm import segments
from streamctl.shm.registry import SymbolRegistry, registry_bytes
from streamctl.shm.ring import Ring, ring_bytes
from streamctl.shm.stats import ProcessTable, stats_bytes

__all__ = ["PlantError", "Provision"]

log = logging.getLogger("streamctl.supervisor")

_REGISTRY_CAPACITY = 65536


class PlantError(RuntimeError):
    """The plant cannot start (or a child failed to become ready); the message says why."""


class Provision:
    """The plant's segments and manifest: `create()` them, `release()` them (idempotent)."""

    def __init__(self, config: PlantConfig, layout: Layout, *, slots: int, config_path: str | None = None,
                 live: bool = True):
        self.config = config
        self.live = live
        """A live plant runs the recovery service and journals (`plan_processes`)."""
        self.layout = layout
        self.slots = slots
        self.config_path = config_path
        self.manifest: dict[str, Any] = {}
        self.table: ProcessTable | None = None
        self.rings: dict[str, Ring] = {}
        self.registries: dict[str, SymbolRegistry] = {}

    def create(self) -> None:
        """Refuse a second plant of the same name, sweep dead plants' segments, check room, create."""
        cfg, name = self.config, self.layout.plant
        existing = read_manifest(name)
        if existing and supervisor_alive(existing):
            raise PlantError(f"plant `{name}` is already running (supervisor pid {existing['supervisor_pid']}); "
                             f"`streamctl down --name {name}` first, or give this config another `name`")
        removed = segments.sweep()
        if removed:
            log.info("removed %d stale segment(s) left by dead plants: %s", len(removed), ", ".join(removed))
        remove_manifest(name)
        segments.check_room(len(self.layout.rings) * ring_bytes(cfg.rings.capacity)
                            + len(self.layout.registries) * registry_bytes(_REGISTRY_CAPACITY)
                            + stats_bytes(self.slots))
        self.manifest = {
            "name": name, "config": os.path.abspath(self.config_path) if self.config_path else None,
            "supervisor_pid": os.getpid(), "supervisor_started": psutil.Process().create_time(),
            "endpoint": cfg.publish.endpoint, "internal": self.layout.internal, "state": "starting",
            "stats": self.layout.stats, "rings": [], "registries": [],
            "log": os.environ.get("STREAMCTL_LOG_FILE"),
            "recovery": recovery_endpoint(cfg.publish.endpoint, cfg.publish.recovery.endpoint)
            if cfg.publish.recovery.enabled and self.live else None,
            "journal": str(data_dir(cfg) / "journal") if cfg.journal.enabled and self.live else None,
            "history": str(history_dir(cfg)) if history_dir(cfg) and self.live else None,
        }
        write_manifest(name, self.manifest)  # written first, so `clean` finds a half-built plant
        self.table = ProcessTable.create(self.layout.stats, self.slots, plant=name)
        for feed, registry in self.layout.registries.items():
            self.registries[feed] = SymbolRegistry.create(registry, capacity=_REGISTRY_CAPACITY, plant=name)
            self.manifest["registries"].append(registry)
        for (feed, partition), ring in self.layout.rings.items():
            self.rings[ring] = Ring.create(ring, cfg.rings.capacity, overflow=cfg.rings.overflow, plant=name)
            self.manifest["rings"].append({"name": ring, "feed": feed, "partition": partition})
        write_manifest(name, self.manifest)

    def set_state(self, state: str) -> None:
        """Record the plant's state (``starting``, ``ready``, ``stopping``) in the manifest."""
        if not self.manifest:
            return
        self.manifest["state"] = state
        try:
            write_manifest(self.layout.plant, self.manifest)
        except OSError:
            log.warning("cannot write the manifest of plant %s (state %s)", self.layout.plant, state)

    def rings_drained(self) -> bool:
        return all(ring.fill == 0 for ring in self.rings.values())

    def release(self) -> None:
        """Unlink every segment made here, then the manifest and the internal sockets (the hub's
        and its recovery service's)."""
        for ring in self.rings.values():
            _quietly(ring.unlink)
            _quietly(ring.close)
        for reg in self.registries.values():
            _quietly(reg.unlink)
            _quietly(reg.close)
        if self.table is not None:
            _quietly(self.table.unlink)
            _quietly(self.table.close)
        self.rings, self.registries, self.table = {}, {}, None
        if not self.manifest:
            return  # this plant never got as far as writing a manifest: the one there (if any) is another's
        remove_manifest(self.layout.plant)
        self.manifest = {}
        for internal in (self.layout.internal, internal_recovery_endpoint(self.layout.internal)):
            _quietly(partial(os.unlink, internal.removeprefix("ipc://")))


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup goes on whatever one segment says
        log.debug("cleanup: %s", exc)
