"""The ingest process: one per feed, pinned to a core, vendor batches -> partition rings.

The loop owns everything a vendor module must not: the symbol registry, the stable symbol ->
partition routing, the rings, heartbeats, counters, events, and (for live vendors) the one
reconnect policy. A vendor session only turns bytes into record batches.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from streamctl.bus.curve import CurveClient
from streamctl.bus.lifecycle import ChildSlot, setup_child
from streamctl.bus.partitioning import partition_of
from streamctl.bus.wire import Event, EventKind, topic
from streamctl.ingest.resume import ResumePoint, resume_point
from streamctl.ingest.vendor_api import (
    FEED_COUNTERS,
    EndOfInput,
    FeedConfig,
    FeedSession,
    SessionError,
    resolve,
)
from streamctl.ingest.vendors import vendor_spec
from streamctl.shm.records import RECORD_DTYPE, Flag, Kind
from streamctl.shm.registry import NO_INSTRUMENT, RegistryError, symbol_problem
from streamctl.shm.stats import RECONNECT_ATTEMPT, CounterName, State
from streamctl.shm.text import printable

if TYPE_CHECKING:
    from streamctl.ingest.validation import Refusal

__all__ = ["FeedSpec", "run_feed", "feed_main", "FeedRuntime", "EXIT_DONE", "EXIT_FAILED"]

log = logging.getLogger("streamctl.feed")

_FOREIGN = -2
"""Ring index of an instrument whose partition another plant owns."""

EXIT_DONE = 0
"""Exit code of a feed whose input ended, or that was asked to stop."""
EXIT_FAILED = 3
"""Exit code of a feed that gave up (the supervisor marks it failed instead of restarting)."""


class FeedSpec(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a feed process needs, resolved by the supervisor."""

    plant: str
    name: str
    slot: int
    feed: FeedConfig
    """The ``feeds[i]`` entry of the plant config."""
    partitions: int
    """The plant layout's partition count (`partitions.count`)."""
    rings: list[str]
    """Ring segment names, one per owned partition, in the order of `own`."""
    own: list[int] | None = None
    """The partitions this plant owns (None: all); records of the others are left to the
    plants that own them (in no ring, not a drop)."""
    registry: str
    stats: str
    events_endpoint: str
    cpu: int | None = None
    curve: CurveClient | None = None
    """The plant's keys for its internal endpoint."""


class FeedRuntime:
    """The `FeedContext` a vendor session sees, plus routing into rings."""

    def __init__(self, spec: FeedSpec, *, registry, rings, slot, publisher):
        from streamctl.ingest.routing import screen  # numba: in the feed, not the CLI

        self.spec = spec
        self.feed_name = spec.name
        self._registry = registry
        self._rings = rings
        self._slot = slot
        self._publisher = publisher
        self._partition = np.full(1024, -1, dtype=np.int64)
        """Instrument id -> index of its ring; _FOREIGN for a partition another plant owns."""
        owned = range(spec.partitions) if spec.own is None else spec.own
        self._ring_of = dict(zip(owned, range(len(rings)), strict=False))
        self._logged: set[str] = set()
        self._refused: set[Refusal] = set()
        self._bad_symbols: set[str] = set()
        self._delivered: np.ndarray | None = None
        self._screen = screen
        self.stop_requested = False

    # ---- FeedContext
    def instrument_id(self, symbol: str) -> int:
        problem = symbol_problem(symbol)
        if problem is None:
            try:
                instrument = self._registry.id_for(symbol)
            except RegistryError as exc:  # full: a gateway sending more mappings than the registry holds
                problem = str(exc)
        if problem is not None:  # e.g. a gateway's 60-byte mapping: its records are refused, the feed goes on
            if symbol not in self._bad_symbols:
                self._bad_symbols.add(symbol)
                self.event(EventKind.MALFORMED, f"symbol {symbol!r} refused: {problem}; its records are dropped")
            return NO_INSTRUMENT
        if instrument >= len(self._partition):
            grown = np.full(max(instrument + 1, 2 * len(self._partition)), -1, dtype=np.int64)
            grown[: len(self._partition)] = self._partition
            self._partition = grown
        if self._partition[instrument] == -1:
            ring = self._ring_of.get(partition_of(symbol, self.spec.partitions))
            self._partition[instrument] = _FOREIGN if ring is None else ring
        return instrument

    def count(self, cause: CounterName, n: int = 1) -> None:
        if cause not in FEED_COUNTERS:
            raise ValueError(f"`cause` must be one of {', '.join(sorted(FEED_COUNTERS))}; was {str(cause)!r}")
        if n:
            self._slot.add(cause, n)

    def event(self, kind: EventKind, message: str, *, code: int | None = None) -> None:
        kind = EventKind(kind)  # a plain string is accepted when it names a kind
        message = printable(message)  # vendor text: no raw escape sequence reaches a log or a subscriber
        key = f"{kind}:{message}"
        if key not in self._logged:  # log each distinct event once, count every occurrence
            self._logged.add(key)
            level = logging.WARNING if kind in _WARNING_EVENTS else logging.INFO
            log.log(level, "feed %s: %s: %s%s", self.spec.name, kind, message, f" (code {code})" if code else "")
        if kind == EventKind.RECONNECT:
            self._slot.add(CounterName.RECONNECTS)
        if self._publisher is not None:
            payload = Event(source=self.spec.name, kind=kind, message=message, code=code, ts=time.time_ns())
            self._publisher.publish(topic("event", self.spec.name), payload)

    def progress(self, done: float, total: float) -> None:
        self._slot.set("progress_done", float(done))
        self._slot.set("progress_total", float(total))

    def heartbeat(self) -> None:
        self._slot.heartbeat()

    def resume_point(self) -> ResumePoint | None:
        """Where a vendor able to replay from an event time resumes (`streamctl.ingest.resume`)."""
        return resume_point(self._rings)

    def attempt_in_progress(self) -> int:
        """The reconnect attempt an earlier process of this feed left in the slot (0 = none)."""
        return int(self._slot.get(RECONNECT_ATTEMPT))

    # ---- reconnect policy
    def reconnecting(self, attempt: int, detail: str) -> None:
        """`AttemptTracker` of the reconnect policy: the attempt goes into the slot (a restarted
        process resumes it), and the feed is RECONNECTING until a session delivers a record."""
        self._slot.set(RECONNECT_ATTEMPT, attempt)
        self._slot.set("detail", detail)
        self._slot.set("state", State.RECONNECTING if attempt else State.READY)

    # ---- routing
    def route(self, batch: np.ndarray, should_stop) -> None:
        """Refuse impossible records, split the rest by partition (order kept within each) and
        publish them to the rings."""
        allow = self.spec.feed.allow_non_positive_prices
        codes, bad, parts, unknown = self._screen(batch, self._partition, allow_non_positive_prices=allow)
        if bad:
            batch = self._refuse(batch, codes, bad)
        if self._delivered is not None:
            batch, parts = self._drop_delivered(batch, parts)
            unknown = int(np.count_nonzero(parts == -1))
        if unknown:
            self.count(CounterName.MALFORMED, unknown)
        self._slot.add(CounterName.RECORDS_IN, len(batch))
        if len(self._rings) == 1 and not unknown and self.spec.own is None:
            self._publish(0, batch, should_stop)
            return
        for p in range(len(self._rings)):
            part = batch[parts == p]
            if len(part):
                self._publish(p, part, should_stop)

    def resume(self, session: FeedSession) -> None:
        """After a restart, a session that can replay its input from the start (`resume`) is
        told how far the rings got; `route` then drops exactly what each ring already has.
        The rings' own counters survive the crash and count a batch cut short by it."""
        delivered = np.array([ring.produced + ring.dropped for ring in self._rings], np.int64)
        resume = getattr(session, "resume", None)
        if resume is None or not delivered.any():
            return
        self._delivered = delivered
        resume(int(delivered.sum()))
        self.event(EventKind.RESTART, f"resuming after {int(delivered.sum())} records delivered before the restart")

    def _drop_delivered(self, batch: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop the first records of each partition that its ring already holds."""
        assert self._delivered is not None
        keep = np.ones(len(batch), np.bool_)
        for p in np.flatnonzero(self._delivered).tolist():
            seen = np.flatnonzero(parts == p)[: self._delivered[p]]
            keep[seen] = False
            self._delivered[p] -= len(seen)
        if not self._delivered.any():
            self._delivered = None
        return batch[keep], parts[keep]

    def _refuse(self, batch: np.ndarray, codes: np.ndarray, bad: int) -> np.ndarray:
        """Count and drop records no vendor could mean (`streamctl.ingest.validation`); the first
        record of each kind of refusal is described in an event, the rest only counted."""
        from streamctl.ingest.validation import Refusal, describe

        self.count(CounterName.MALFORMED, bad)
        for code in np.unique(codes[codes != 0]):
            reason = Refusal(int(code))
            if reason not in self._refused:
                self._refused.add(reason)
                first = batch[int(np.argmax(codes == code))]
                self.event(EventKind.MALFORMED, f"records refused ({reason.name.lower()}), first: {describe(first)}")
        return batch[codes == 0]

    def _publish(self, partition: int, records: np.ndarray, should_stop) -> None:
        written = self._rings[partition].publish(records, should_stop=should_stop)
        self._slot.add(CounterName.RECORDS_OUT, written)
        if written < len(records):
            self._slot.add(CounterName.OVERFLOW, len(records) - written)

    def reset_records(self, instrument_ids: list[int]) -> np.ndarray:
        """One RESET record per instrument (after a reconnect, workers clear those books)."""
        batch = np.zeros(len(instrument_ids), dtype=RECORD_DTYPE)
        now = time.time_ns()
        batch["instrument_id"] = instrument_ids
        batch["kind"] = Kind.RESET
        batch["ts_event"] = now
        batch["ts_recv"] = now
        if len(batch):
            batch["flags"][-1] = Flag.LAST
        return batch


_WARNING_EVENTS = frozenset({EventKind.ERROR, EventKind.DISCONNECT, EventKind.FAILED, EventKind.GAP})
"""Event kinds logged as warnings; the others are logged as info."""


def _build_session(spec: FeedSpec, runtime: FeedRuntime) -> FeedSession:
    vendor = vendor_spec(spec.feed.vendor)
    options: object = msgspec.convert(spec.feed.options, vendor.options, strict=False)
    session_type = vendor.session_type()

    def factory() -> FeedSession:
        return session_type(options, spec.feed, runtime)

    if not vendor.live:
        return factory()
    from streamctl.bus.retry import ReconnectPolicy
    from streamctl.ingest.reconnect import ReconnectingSession

    policy = getattr(options, "reconnect", None) or ReconnectPolicy()
    return ReconnectingSession(factory, policy, runtime, reset_records=runtime.reset_records,
                               attempt=int(runtime.attempt_in_progress()), track=runtime.reconnecting)


def run_feed(spec: FeedSpec) -> int:
    """Process entry point (spawned by the supervisor). Returns the exit code."""
    from streamctl.bus.publisher import Publisher
    from streamctl.shm.registry import SymbolRegistry
    from streamctl.shm.ring import Ring

    stop = setup_child(f"feed[{spec.name}]", spec.cpu)
    child = ChildSlot(spec.stats, spec.slot, spec.cpu)
    slot = child.slot
    rings = [Ring.attach(name) for name in spec.rings]
    registry = SymbolRegistry.attach(spec.registry)
    publisher = Publisher(spec.events_endpoint, src=spec.name, curve=spec.curve)
    runtime = FeedRuntime(spec, registry=registry, rings=rings, slot=slot, publisher=publisher)
    session = None
    code = EXIT_DONE

    def should_stop() -> bool:
        slot.heartbeat()
        return bool(stop)

    try:
        warm_up = vendor_spec(spec.feed.vendor).warm_up
        if warm_up:  # a forkserver that preloaded only other vendors' kernels: load ours before READY
            resolve(warm_up)()
        session = _build_session(spec, runtime)
        session.open()
        runtime.resume(session)
        if not runtime.attempt_in_progress():  # else the reconnect policy has said RECONNECTING
            child.ready()
        while not should_stop():
            try:
                batch = session.poll(0.05)
            except EndOfInput:
                runtime.event(EventKind.DONE, "input finished")
                slot.set("detail", "input finished")
                break
            for ring in rings:
                ring.heartbeat()
            if batch is not None and len(batch):
                runtime.route(batch, should_stop)
    except SessionError as exc:
        slot.set("detail", str(exc))
        runtime.event(EventKind.FAILED, str(exc), code=exc.code)
        code = EXIT_FAILED
    except Exception as exc:  # FeedFailed from the reconnect policy, or a bug: say why, exit non-zero
        from streamctl.ingest.reconnect import FeedFailed

        child.crashed(exc)
        if isinstance(exc, FeedFailed):
            code = EXIT_FAILED
        else:
            log.exception("feed %s crashed", spec.name)
            code = 1
    finally:
        child.stopping()
        if session is not None:
            try:
                session.close()
            except Exception:  # pragma: no cover - closing must not mask the exit reason
                log.exception("closing session")
        publisher.close()
        for ring in rings:
            ring.close()
        registry.close()
        child.close(failed=code == EXIT_FAILED)  # a crash (code 1) is restarted, not failed
    return code


def feed_main(spec: FeedSpec) -> None:
    """`multiprocessing` target: run and exit with the feed's code."""
    raise SystemExit(run_feed(spec))
