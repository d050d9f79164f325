"""Plan: the plant's processes worked out from the config, before anything exists.

Pure: it names segments and endpoints but creates none of them, so provisioning, supervision
and `status` all read one answer to "what runs where". Slot 0 is the hub, then one worker per
partition, then one feed per configured feed; each gets a core (configured, or the next free one).
The hub gets the plant's internal CURVE server keys, and every publishing child the client keys,
in its spec: they reach the children in memory through the forkserver, never on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamctl.bus.curve import CurveClient, CurveServer, load_server
from streamctl.bus.hub import HubSpec, hub_main
from streamctl.bus.recovery import internal_recovery_endpoint, recovery_endpoint
from streamctl.cli.config import FeedConfig, PlantConfig, data_dir
from streamctl.cli.runtime import internal_endpoint
from streamctl.ingest.feed import FeedSpec, feed_main
from streamctl.ingest.vendors import vendor_spec
from streamctl.process.worker import RingSource, WorkerSpec, worker_main
from streamctl.shm import segments
from streamctl.shm.stats import Role

__all__ = ["Layout", "ProcessPlan", "plan_processes", "wall_clocked"]

START_ORDER = (Role.HUB, Role.WORKER, Role.INGEST)
"""Who starts first: the hub must take messages before workers publish, workers must read
before feeds write. Stopping runs the other way round."""


@dataclass(frozen=True)
class Layout:
    """Names of everything the plant shares: segments and the internal endpoint."""

    plant: str
    stats: str
    internal: str
    registries: dict[str, str]
    """Feed name -> its symbol registry segment."""
    rings: dict[tuple[str, int], str]
    """(feed name, partition) -> ring segment."""

    @classmethod
    def of(cls, config: PlantConfig) -> Layout:
        name = config.name
        return cls(
            plant=name,
            stats=segments.segment_name(name, "stats"),
            internal=internal_endpoint(name),
            registries={f.name: segments.segment_name(name, "sym", f.name) for f in config.feeds},
            rings={(f.name, p): segments.segment_name(name, "ring", f.name, f"p{p}")
                   for f in config.feeds for p in range(config.partitions.count)},
        )


@dataclass(frozen=True)
class ProcessPlan:
    """One process of the plant: its table slot, its entry point and the spec passed to it."""

    name: str
    role: Role
    slot: int
    target: Callable[[Any], None]
    spec: HubSpec | WorkerSpec | FeedSpec


def wall_clocked(config: PlantConfig, feed: FeedConfig) -> bool:
    """Whether `feed`'s event time is now (the vendor decides: `VendorSpec.event_time_is_now`)."""
    return vendor_spec(feed.vendor).event_time_is_now(config.vendor_options(feed))


def plan_processes(config: PlantConfig, layout: Layout, keys: tuple[CurveServer, CurveClient], *,
                   live: bool = True, run: int = 0) -> list[ProcessPlan]:
    """Hub, workers, feeds, in slot order. `keys` are the run's `streamctl.bus.curve.plant_keys`;
    `run` (the supervisor's start, ns) names the run's journal files. Only a live plant journals:
    `streamctl replay` reads its input from files it can read again."""
    journal = config.journal if live and config.journal.enabled else None
    recovery = live and config.publish.recovery.enabled  # `streamctl replay` records everything itself
    journal_root = data_dir(config) / "journal"
    n_parts, feeds = config.partitions.count, config.feeds
    next_core = iter(list(range(os.cpu_count() or 1)) * (n_parts + len(feeds) + 1))
    server, client = keys
    curve = config.publish.curve
    public_curve = None if curve is None else load_server(curve.server_secret_key, curve.client_public_keys)
    plans = [ProcessPlan("hub", Role.HUB, 0, hub_main, HubSpec(
        plant=layout.plant, slot=0, stats=layout.stats, internal=layout.internal, public=config.publish.endpoint,
        sndhwm=config.publish.sndhwm, internal_curve=server, public_curve=public_curve,
        recovery=recovery_endpoint(config.publish.endpoint, config.publish.recovery.endpoint) if recovery else None,
        recovery_bytes=config.publish.recovery.topic_bytes))]
    feed_cores = [f.cpu if f.cpu is not None else next(next_core) for f in feeds]
    for p in range(n_parts):
        cpu = config.partitions.cpus[p] if config.partitions.cpus else next(next_core)
        sources = [RingSource(feed=f.name, ring=layout.rings[f.name, p], registry=layout.registries[f.name],
                              wall_clock=wall_clocked(config, f)) for f in feeds]
        worker = WorkerSpec(plant=layout.plant, partition=p, slot=1 + p, sources=sources, stats=layout.stats,
                            endpoint=layout.internal, calculators=config.calculators,
                            raw_trades=config.publish.raw_trades, raw_quotes=config.publish.raw_quotes,
                            sndhwm=config.publish.sndhwm, live=live, cpu=cpu, curve=client,
                            journal=journal, journal_dir=str(journal_root / f"p{p}"), run=run,
                            recovery=internal_recovery_endpoint(layout.internal) if recovery else None)
        plans.append(ProcessPlan(worker.name, Role.WORKER, worker.slot, worker_main, worker))
    for i, feed in enumerate(feeds):
        slot = 1 + n_parts + i
        spec = FeedSpec(plant=layout.plant, name=feed.name, slot=slot, feed=feed, partitions=n_parts,
                        rings=[layout.rings[feed.name, p] for p in range(n_parts)],
                        registry=layout.registries[feed.name], stats=layout.stats,
                        events_endpoint=layout.internal, cpu=feed_cores[i], curve=client)
        plans.append(ProcessPlan(feed.name, Role.INGEST, slot, feed_main, spec))
    return plans
