"""The worker process: one per symbol partition, rings -> calculators -> ZeroMQ.

It consumes the partition's ring of every feed in batches, maps each feed's instrument ids to
one dense local symbol index (resolving new ids through the feed's symbol registry), runs the
calculators over the whole batch, and publishes their results. On stop it drains its rings
and flushes the bars still open, so a clean stop loses nothing the feeds had handed over.
"""

from __future__ import annotations

import logging
import time

import msgspec
import numpy as np

from streamctl.bus.lifecycle import ChildSlot, setup_child
from streamctl.bus.wire import Event, topic

__all__ = ["WorkerSpec", "RingSource", "run_worker", "worker_main"]

log = logging.getLogger("streamctl.worker")

_MAX_BATCH = 4096
_CLOCK_PERIOD_NS = 50_000_000
_CLOSE_LINGER_MS = 10_000
"""At stop, queued messages (the flushed bars) get this long to reach the hub."""


class RingSource(msgspec.Struct, frozen=True):
    feed: str
    ring: str
    registry: str


class WorkerSpec(msgspec.Struct, kw_only=True, frozen=True):
    plant: str
    partition: int
    slot: int
    sources: list[RingSource]
    stats: str
    endpoint: str
    """The plant's internal publish endpoint (the proxy's XSUB)."""
    calculators: object  # CalculatorsConfig
    raw_trades: bool = True
    raw_quotes: bool = True
    sndhwm: int = 100_000
    live: bool = True
    cpu: int | None = None
    max_idle_sleep: float = 100e-6
    """Longest sleep of an idle worker between ring checks: the latency floor it adds."""

    @property
    def name(self) -> str:
        return f"worker-{self.partition}"


class _SymbolMap:
    """Feed instrument id -> dense local symbol index, grown as new ids appear."""

    def __init__(self, registry, calculators, symbols: list[str]):
        self._registry = registry
        self._calc = calculators
        self._symbols = symbols
        self._lookup = np.full(256, -1, dtype=np.int32)

    def indices(self, ids: np.ndarray) -> np.ndarray:
        ids64 = ids.astype(np.int64)
        if len(ids64) and int(ids64.max()) >= len(self._lookup):
            grown = np.full(max(int(ids64.max()) + 1, 2 * len(self._lookup)), -1, dtype=np.int32)
            grown[: len(self._lookup)] = self._lookup
            self._lookup = grown
        idx = self._lookup[ids64]
        if (idx < 0).any():
            for instrument in np.unique(ids64[idx < 0]):
                symbol = self._registry.symbol(int(instrument))
                if symbol is not None:
                    local = self._calc.add_symbol(symbol)
                    while len(self._symbols) <= local:
                        self._symbols.append("")
                    self._symbols[local] = symbol
                    self._lookup[instrument] = local
            idx = self._lookup[ids64]
        return idx


def run_worker(spec: WorkerSpec) -> int:
    """Process entry point (spawned by the supervisor). Returns the exit code."""
    from streamctl.bus.publisher import Publisher
    from streamctl.process.calc.engine import CalculatorSet
    from streamctl.shm.idle import IdleStrategy
    from streamctl.shm.registry import SymbolRegistry
    from streamctl.shm.ring import Ring

    stop = setup_child(spec.name, spec.cpu)
    child = ChildSlot(spec.stats, spec.slot, spec.cpu)
    slot = child.slot

    calc = CalculatorSet(spec.calculators, src=spec.name, live=spec.live)
    publisher = Publisher(spec.endpoint, src=spec.name, sndhwm=spec.sndhwm, linger=_CLOSE_LINGER_MS)
    rings = [Ring.attach(s.ring) for s in spec.sources]
    registries = [SymbolRegistry.attach(s.registry) for s in spec.sources]
    symbols: list[str] = []
    maps = [_SymbolMap(reg, calc, symbols) for reg in registries]
    idle = IdleStrategy(max_sleep=spec.max_idle_sleep)
    late_seen = 0
    next_clock = 0

    def process(ring_index: int, batch: np.ndarray) -> None:
        nonlocal late_seen
        sym_idx = maps[ring_index].indices(batch["instrument_id"])
        unknown = sym_idx < 0
        if unknown.any():
            slot.add("malformed", int(unknown.sum()))
            batch, sym_idx = batch[~unknown], sym_idx[~unknown]
        slot.add("records_in", len(batch))
        sent = 0
        if spec.raw_trades or spec.raw_quotes:  # raw ticks first: they need not wait for the calculators
            sent += publisher.publish_raw(batch, symbols, sym_idx, trades=spec.raw_trades, quotes=spec.raw_quotes)
        outputs = calc.on_batch(batch, sym_idx)
        sent += len(outputs)
        publisher.publish_many(outputs)
        slot.add("records_out", sent)
        late = calc.counters.get("late", 0)
        if late != late_seen:
            slot.add("late", late - late_seen)
            late_seen = late

    pending: list[list[np.ndarray]] = [[] for _ in rings]

    def drain_once() -> bool:
        worked = False
        for i, ring in enumerate(rings):
            if spec.live:
                batch = ring.consume(_MAX_BATCH)
                if len(batch):
                    worked = True
                    process(i, batch)
                continue
            # Replay: cut the stream at fixed positions (multiples of _MAX_BATCH records), never
            # where a consume happened to stop, so per-batch outputs (VWAP, indicators, books)
            # are the same in every run.
            room = _MAX_BATCH - ring.consumed % _MAX_BATCH
            batch = ring.consume(room)
            if len(batch):
                worked = True
                pending[i].append(batch.copy())
                if len(batch) == room:
                    process(i, np.concatenate(pending[i]))
                    pending[i].clear()
        return worked

    def drain_pending() -> None:
        for i, parts in enumerate(pending):
            if parts:
                process(i, np.concatenate(parts))
                parts.clear()

    code = 0
    try:
        child.ready()
        while not stop:
            worked = drain_once()
            now = time.time_ns()
            if now >= next_clock:
                slot.heartbeat()
                # Close bars by the wall clock only once caught up: while a backlog is being
                # worked off (after a restart), its ticks are not late, just not read yet.
                if spec.live and all(ring.fill == 0 for ring in rings):
                    outputs = calc.on_clock(now)
                    if outputs:
                        publisher.publish_many(outputs)
                        slot.add("records_out", len(outputs))
                next_clock = now + _CLOCK_PERIOD_NS
            idle.idle(worked)
        child.stopping()
        # Drain what the (already stopped) feeds handed over, then close the open bars.
        deadline = time.monotonic() + 5.0
        while drain_once() and time.monotonic() < deadline:
            slot.heartbeat()
        drain_pending()
        if getattr(spec.calculators.bars, "flush_on_stop", True):
            outputs = calc.flush()
            publisher.publish_many(outputs)
            slot.add("records_out", len(outputs))
    except Exception as exc:
        log.exception("%s crashed", spec.name)
        child.crashed(exc)
        code = 1
    finally:
        # The last message on this publisher's pipe: a recorder knows everything before it arrived.
        publisher.publish(topic("event", spec.name),
                          Event(source=spec.name, kind="stopped", message=f"exit code {code}", ts=time.time_ns()))
        publisher.close()
        for ring in rings:
            ring.close()
        for reg in registries:
            reg.close()
        child.close(failed=code != 0)
    return code


def worker_main(spec: WorkerSpec) -> None:
    """`multiprocessing` target: run and exit with the worker's code."""
    raise SystemExit(run_worker(spec))
