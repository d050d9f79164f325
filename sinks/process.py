"""The sink process: one per configured sink, started and watched by the supervisor.

It subscribes like any application, so a sink sees exactly what a subscriber sees. It reports
READY once its own probe has come back through the plant's proxy (its subscriptions are in
place, so workers started after it lose nothing to the slow joiner) and its store is open, or
RECONNECTING while the store is down. Its slot in the process table carries rows in
(`records_in`), rows stored (`records_out`), `backlog`, `lag_ns`, `errors`, `gaps` and
`overflow`, which `streamctl status` shows.
"""

from __future__ import annotations

import logging
import time

import msgspec

from streamctl.bus.curve import CurveClient
from streamctl.bus.lifecycle import ChildSlot, setup_child
from streamctl.bus.publisher import Publisher
from streamctl.bus.wire import Event, EventKind, topic
from streamctl.client import Subscriber
from streamctl.sinks.runner import Counters, Sink, SinkFailed
from streamctl.sinks.settings import SinkConfig
from streamctl.sinks.stores import open_store

__all__ = ["SinkSpec", "sink_main", "EXIT_FAILED", "process_name"]

log = logging.getLogger("streamctl.sink")

EXIT_FAILED = 3
"""Exit code of a sink that gave up on its store (the supervisor marks it failed)."""

HANDSHAKE_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
"""Seconds a stopping sink keeps writing what is waiting (while the store is up); less than
the supervisor's stop timeout (10 s), so rows it cannot write are counted, not killed."""


def process_name(config: SinkConfig) -> str:
    return f"sink-{config.name}"


class SinkSpec(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a sink process needs, resolved by the supervisor."""

    plant: str
    slot: int
    stats: str
    sink: SinkConfig
    endpoint: str
    """Where it subscribes: the plant's public endpoint."""
    events_endpoint: str
    """Where it publishes ``event.sink-<name>``: the plant's internal endpoint."""
    plant_partitions: int
    cpu: int | None = None
    curve: CurveClient | None = None
    """The plant's keys for its internal endpoint."""
    recovery: str | None = None
    """The plant's public recovery endpoint, where the sink asks for what it did not store;
    None: the plant runs no recovery service (what is lost is counted and reported)."""

    @property
    def name(self) -> str:
        return process_name(self.sink)


def sink_main(spec: SinkSpec) -> None:
    """Entry point of the sink process."""
    stop = setup_child(spec.name, spec.cpu)
    child = ChildSlot(spec.stats, spec.slot, spec.cpu)
    code = 0
    try:
        run_sink(spec, child, stop)
    except SinkFailed as exc:
        log.error("%s gave up: %s", spec.name, exc)
        child.slot.set("detail", str(exc))
        code = EXIT_FAILED
    except Exception as exc:
        log.exception("%s crashed", spec.name)
        child.crashed(exc)
        code = 1
    child.close(failed=code != 0)
    if code:
        raise SystemExit(code)


def run_sink(spec: SinkSpec, child: ChildSlot, stop) -> None:
    with Publisher(spec.events_endpoint, src=spec.name, curve=spec.curve) as publisher, \
            Subscriber(spec.endpoint, recovery=spec.recovery or False) as sub:
        own = topic("event", spec.name)

        def event(kind: str, message: str) -> None:
            (log.warning if kind in _WARNINGS else log.info)("%s", message)
            publisher.publish(own, Event(source=spec.name, kind=kind, message=message, ts=time.time_ns()))

        sink = Sink(spec.sink, open_store(spec.sink, plant_partitions=spec.plant_partitions), Counters(child), event,
                    history=sub.history_after)
        sink.attach(sub)
        _handshake(sub, publisher, own, stop)
        sink.step()  # opens the store: READY, or RECONNECTING while it is down
        while not stop:
            child.slot.heartbeat()
            sub.poll(sink.next_due(), max_messages=spec.sink.batch_rows)
            if sink.step():  # more than a batch waits: write it, but read the socket in between
                sub.poll(0, max_messages=spec.sink.batch_rows)
        child.stopping()
        sub.poll(0.2)  # what is already queued for us
        left = sink.close(STOP_TIMEOUT)
        if left:
            event(EventKind.ERROR, f"stopped with {left} rows not written (store down or slow)")


def _handshake(sub: Subscriber, publisher: Publisher, own: str, stop) -> None:
    """Publish probes until one comes back: then the proxy has our subscriptions."""
    seen: list[bool] = []

    def on_event(ev: Event) -> None:
        if ev.kind == EventKind.PROBE and ev.source == publisher.src:
            seen.append(True)

    sub.on_event(on_event)
    sub.subscribe(own)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while not seen and not stop:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no probe came back through `{sub.endpoint}` in {HANDSHAKE_TIMEOUT:.0f} s")
        publisher.publish(own, Event(source=publisher.src, kind=EventKind.PROBE, message="", ts=time.time_ns()))
        sub.poll(0.05)
    sub.unsubscribe(own)


_WARNINGS = {EventKind.DISCONNECT, EventKind.RECONNECT_FAILED, EventKind.GAP, EventKind.ERROR}
