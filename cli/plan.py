"""Plan: the plant's processes worked out from the config, before anything exists.

Pure: it names segments and endpoints but creates none of them, so provisioning, supervision
and `status` all read one answer to "what runs where". Slot 0 is the hub, then one sink per
configured sink, then one worker per owned partition (`partitions.own`), then one feed per
configured feed; each worker and feed gets a core (configured, or the next free one).
The hub gets the plant's internal CURVE server keys, and every publishing child the client keys,
in its spec: they reach the children in memory through the forkserver, never on disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamctl.bus.curve import CurveClient, CurveServer, load_server
from streamctl.bus.hub import HubSpec, hub_main
from streamctl.bus.recovery import internal_recovery_endpoint, recovery_endpoint
from streamctl.cli.config import FeedConfig, PlantConfig, data_dir, history_dir
from streamctl.cli.runtime import internal_endpoint
from streamctl.ingest.feed import FeedSpec, feed_main
from streamctl.ingest.vendors import vendor_spec
from streamctl.process.worker import RingSource, WorkerSpec, worker_main
from streamctl.shm import segments
from streamctl.shm.stats import Role
from streamctl.sinks.process import SinkSpec, sink_main

__all__ = ["Layout", "ProcessPlan", "plan_processes", "wall_clocked", "owned_partitions", "subscriber_endpoint"]

START_ORDER = (Role.HUB, Role.SINK, Role.WORKER, Role.INGEST)
"""Who starts first: the hub must take messages before anyone publishes, sinks must be
subscribed before workers publish, workers must read before feeds write. Stopping runs the
other way round (sinks write what workers flushed at their stop)."""


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
                   for f in config.feeds for p in owned_partitions(config)},
        )


@dataclass(frozen=True)
class ProcessPlan:
    """One process of the plant: its table slot, its entry point and the spec passed to it."""

    name: str
    role: Role
    slot: int
    target: Callable[[Any], None]
    spec: HubSpec | WorkerSpec | FeedSpec | SinkSpec


def owned_partitions(config: PlantConfig) -> list[int]:
    """The partitions this plant runs a worker for (`partitions.own`, or all)."""
    own = config.partitions.own
    return list(range(config.partitions.count)) if own is None else sorted(own)


def subscriber_endpoint(public: str) -> str:
    """Where a plant's own subscriber (a sink) connects to its public endpoint."""
    return re.sub(r"^tcp://(0\.0\.0\.0|\*|\[::\]):", "tcp://127.0.0.1:", public)


def wall_clocked(config: PlantConfig, feed: FeedConfig) -> bool:
    """Whether `feed`'s event time is now (the vendor decides: `VendorSpec.event_time_is_now`)."""
    return vendor_spec(feed.vendor).event_time_is_now(config.vendor_options(feed))


def plan_processes(config: PlantConfig, layout: Layout, keys: tuple[CurveServer, CurveClient], *,
                   live: bool = True, run: int = 0) -> list[ProcessPlan]:
    """Hub, sinks, workers, feeds, in slot order. `keys` are the run's `streamctl.bus.curve.plant_keys`;
    `run` (the supervisor's start, ns) names the run's journal files. Only a live plant journals:
    `streamctl replay` reads its input from files it can read again."""
    journal = config.journal if live and config.journal.enabled else None
    recovery = live and config.publish.recovery.enabled  # `streamctl replay` records everything itself
    journal_root = data_dir(config) / "journal"
    history = history_dir(config) if recovery else None
    n_parts, feeds, owned = config.partitions.count, config.feeds, owned_partitions(config)
    next_core = iter(list(range(os.cpu_count() or 1)) * (len(owned) + len(feeds) + 1))
    server, client = keys
    curve = config.publish.curve
    public_curve = None if curve is None else load_server(curve.server_secret_key, curve.client_public_keys)
    plans = [ProcessPlan("hub", Role.HUB, 0, hub_main, HubSpec(
        plant=layout.plant, slot=0, stats=layout.stats, internal=layout.internal, public=config.publish.endpoint,
        sndhwm=config.publish.sndhwm, internal_curve=server, public_curve=public_curve,
        recovery=recovery_endpoint(config.publish.endpoint, config.publish.recovery.endpoint) if recovery else None,
        recovery_bytes=config.publish.recovery.topic_bytes, run=run,
        history=config.publish.recovery.history if history else None,
        history_dir=str(history) if history else None))]
    public_recovery = subscriber_endpoint(recovery_endpoint(config.publish.endpoint, config.publish.recovery.endpoint)) \
        if recovery else None
    for sink in config.sinks:  # not pinned: a sink waits on its store, it does not spin
        spec = SinkSpec(plant=layout.plant, slot=len(plans), stats=layout.stats, sink=sink,
                        endpoint=subscriber_endpoint(config.publish.endpoint), events_endpoint=layout.internal,
                        plant_partitions=n_parts, curve=client, recovery=public_recovery)
        plans.append(ProcessPlan(spec.name, Role.SINK, spec.slot, sink_main, spec))
    feed_cores = [f.cpu if f.cpu is not None else next(next_core) for f in feeds]
    for i, p in enumerate(owned):
        cpu = config.partitions.cpus[i] if config.partitions.cpus else next(next_core)
        sources = [RingSource(feed=f.name, ring=layout.rings[f.name, p], registry=layout.registries[f.name],
                              wall_clock=wall_clocked(config, f)) for f in feeds]
        worker = WorkerSpec(plant=layout.plant, partition=p, slot=len(plans), sources=sources, stats=layout.stats,
                            endpoint=layout.internal, calculators=config.calculators,
                            raw_trades=config.publish.raw_trades, raw_quotes=config.publish.raw_quotes,
                            sndhwm=config.publish.sndhwm, live=live, cpu=cpu, curve=client,
                            journal=journal, journal_dir=str(journal_root / f"p{p}"), run=run,
                            linger=config.partitions.linger_ms * 1e-3,
                            recovery=internal_recovery_endpoint(layout.internal) if recovery else None)
        plans.append(ProcessPlan(worker.name, Role.WORKER, worker.slot, worker_main, worker))
    for i, feed in enumerate(feeds):
        slot = len(plans)
        feed_spec = FeedSpec(plant=layout.plant, name=feed.name, slot=slot, feed=feed, partitions=n_parts,
                             rings=[layout.rings[feed.name, p] for p in owned],
                             own=None if config.partitions.own is None else owned,
                             registry=layout.registries[feed.name], stats=layout.stats,
                             events_endpoint=layout.internal, cpu=feed_cores[i], curve=client)
        plans.append(ProcessPlan(feed.name, Role.INGEST, slot, feed_main, feed_spec))
    return plans
