"""The worker process: one per symbol partition, rings -> calculators -> ZeroMQ.

It consumes the partition's ring of every feed in batches, maps each feed's instrument ids to
one dense local symbol index (resolving new ids through the feed's symbol registry), runs the
calculators over the whole batch, and publishes their results. On stop it drains its rings
and flushes the bars still open, so a clean stop loses nothing the feeds had handed over.

With a journal (`process/journal`, `docs/journal.md`) every batch is on disk before the
calculators see it and before the ring lets go of it; a worker restarted after a crash replays
its run's journal through its calculators, sending nothing its previous life had already sent,
so it goes on with the same state and the same ``seq`` on every topic.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import numpy as np

from streamctl.bus.curve import CurveClient
from streamctl.bus.lifecycle import ChildSlot, setup_child
from streamctl.bus.messages import Messages
from streamctl.bus.wire import Event, topic
from streamctl.process.calc.settings import CalculatorsConfig
from streamctl.process.feed_clock import FeedClock, symbol_clocks
from streamctl.process.journal.settings import JournalConfig
from streamctl.shm.records import join

__all__ = ["WorkerSpec", "RingSource", "Worker", "run_worker", "worker_main"]

log = logging.getLogger("streamctl.worker")

_MAX_BATCH = 4096
_CLOCK_PERIOD_NS = 50_000_000
_DRAIN_SECONDS = 5.0
"""At stop, the longest the worker keeps reading its rings before it flushes."""
_CLOSE_LINGER_MS = 10_000
"""At stop, queued messages (the flushed bars) get this long to reach the hub."""
_SUBSCRIBED_TIMEOUT = 10.0
"""At start, the longest the worker waits for the hub's subscriptions before it publishes."""


class RingSource(msgspec.Struct, frozen=True):
    feed: str
    ring: str
    registry: str
    wall_clock: bool = False
    """The feed's event time is now (a live vendor, a wall-clock simulator): while quiet, its
    clock moves on with the wall clock. Otherwise only its records move it (a replay)."""


class WorkerSpec(msgspec.Struct, kw_only=True, frozen=True):
    plant: str
    partition: int
    slot: int
    sources: list[RingSource]
    stats: str
    endpoint: str
    """The plant's internal publish endpoint (the proxy's XSUB)."""
    calculators: CalculatorsConfig
    raw_trades: bool = True
    raw_quotes: bool = True
    sndhwm: int = 100_000
    live: bool = True
    cpu: int | None = None
    curve: CurveClient | None = None
    """The plant's keys for its internal endpoint."""
    journal: JournalConfig | None = None
    """Journal settings (live workers only); None: no journal."""
    journal_dir: str = ""
    """This partition's journal directory."""
    run: int = 0
    """The plant run (the supervisor's start, ns): a restarted worker replays this run's journal."""
    recovery: str | None = None
    """The hub's internal recovery endpoint: a restarted worker asks it what the hub already
    forwarded from it; None (no service): the worker's own published mark decides."""
    linger: float = 0.0
    """Seconds a live worker lets records gather after a batch (``partitions.linger_ms``)."""

    @property
    def name(self) -> str:
        return f"worker-{self.partition}"


class Worker:
    """One partition's loop in named steps: attach, consume a batch, drain, close bars by the
    clock, and at stop drain, flush and close."""

    def __init__(self, spec: WorkerSpec):
        from streamctl.bus.publisher import Publisher
        from streamctl.process.calc.engine import CalculatorSet
        from streamctl.process.latency import observe_latency
        from streamctl.process.symbol_map import SymbolMap
        from streamctl.shm.registry import SymbolRegistry
        from streamctl.shm.ring import Ring, wait_for_records

        self.spec = spec
        self.stop = setup_child(spec.name, spec.cpu)
        self.child = ChildSlot(spec.stats, spec.slot, spec.cpu)
        self.slot = self.child.slot
        self.calc = CalculatorSet(spec.calculators, src=spec.name, live=spec.live)
        self.publisher = Publisher(spec.endpoint, src=spec.name, sndhwm=spec.sndhwm, linger=_CLOSE_LINGER_MS,
                                   curve=spec.curve)
        self.rings = [Ring.attach(s.ring) for s in spec.sources]
        self.registries = [SymbolRegistry.attach(s.registry) for s in spec.sources]
        self.symbols: list[str] = []
        self.maps = [SymbolMap(reg, self.calc, self.symbols) for reg in self.registries]
        for ring in self.rings:
            ring.consumer_attached()
        self._wait_for_records = wait_for_records
        self._observe_latency = observe_latency
        max_jump = int(spec.calculators.bars.clock_max_jump * 1e9)
        self.clocks = [FeedClock(wall_clocked=s.wall_clock, max_jump=max_jump) for s in spec.sources]
        self.pending: list[list[np.ndarray]] = [[] for _ in self.rings]
        """Replay only: records read since the last fixed batch boundary, per ring."""
        self.late_seen = 0
        self._next_clock = 0
        self._next_detail = 0
        self.restored = ""
        """What the restart restored (`restore`), shown in `status` beside the journal's state."""
        self.journal = None
        self.mark = None
        self.checkpoints = None
        self.journaled_to: list[int | None] = [None] * len(self.rings)
        """Per ring: the read position just past its last journaled batch (a checkpoint's part)."""
        if spec.journal is not None and spec.journal.enabled and spec.live:
            from streamctl.process.checkpoint import Checkpointer
            from streamctl.process.journal.writer import JournalWriter, PublishedMark

            directory = Path(spec.journal_dir)
            self.journal = JournalWriter(directory, partition=spec.partition, run=spec.run, config=spec.journal)
            self.mark = PublishedMark(directory, spec.run)
            checkpoints = Checkpointer(directory, run=spec.run, config=spec.journal)
            self.checkpoints = checkpoints if checkpoints.enabled else None
            self.publisher.record_sent(self.mark.array)
            for i, symbols in enumerate(self.maps):
                symbols.on_learn = self._symbol_journaler(i)

    def run(self) -> int:
        """Loop until told to stop, then drain and flush. Returns the exit code."""
        code = 0
        try:
            # A restarted worker's first messages must not be lost to the slow joiner.
            if not self.publisher.wait_subscribed(_SUBSCRIBED_TIMEOUT):
                log.warning("%s: the hub's subscriptions did not arrive within %s s", self.spec.name,
                            _SUBSCRIBED_TIMEOUT)
            if self.journal is not None:
                from streamctl.process.restore import restore

                restore(self)
            self.child.ready()
            linger = int(self.spec.linger * 1e9) if self.spec.live else 0
            gather_until = 0
            while not self.stop:
                now = time.time_ns()
                if now < gather_until:  # lingering: the next batch gathers; only the clock interrupts
                    time.sleep(max(min(gather_until, self._next_clock) - now, 0) * 1e-9)  # a tick may be due
                    self.tick(time.time_ns())
                    continue
                worked = self.drain()
                now = time.time_ns()
                self.tick(now)
                if not worked:  # asleep on the rings' doorbell until a feed publishes or the next tick
                    self._wait_for_records(self.rings, (self._next_clock - now) * 1e-9)
                elif linger and all(ring.fill < _MAX_BATCH for ring in self.rings):
                    gather_until = now + linger  # no doorbell meanwhile: its wake-ups are what lingering saves
            self.child.stopping()
            self.finish()
        except Exception as exc:
            log.exception("%s crashed", self.spec.name)
            self.child.crashed(exc)
            code = 1
        finally:
            self.close(code)
        return code

    def consume(self, ring_index: int, batch: np.ndarray, sym_idx: np.ndarray | None = None, *,
                count: bool = True) -> None:
        """Run one batch of one ring through the calculators and publish what they produce.

        `sym_idx`: the batch's local symbol indices if already looked up (the journaling path
        resolves them before it writes the batch); `count`: add to the slot's counters (not
        when a restart replays its journal).
        """
        spec, slot = self.spec, self.slot
        if sym_idx is None:
            sym_idx = self.maps[ring_index].indices(batch)
        if len(sym_idx) and sym_idx.min() < 0:
            unknown = sym_idx < 0
            if count:
                slot.add("malformed", int(unknown.sum()))
            batch, sym_idx = batch[~unknown], sym_idx[~unknown]
        self.clocks[ring_index].saw(batch["ts_event"], time.time_ns())
        if count:
            slot.add("records_in", len(batch))
        sent = 0
        # Raw ticks go first, in the same hand-over to ZeroMQ as the calculators' outputs.
        if spec.raw_trades or spec.raw_quotes:
            sent += self.publisher.publish_raw(batch, self.symbols, sym_idx, trades=spec.raw_trades,
                                               quotes=spec.raw_quotes, hold=True)
        outputs = self.calc.on_batch(batch, sym_idx)
        sent += len(outputs)
        self.publisher.publish_messages(outputs)
        late = self.calc.counters.get("late", 0)
        if count:
            slot.add("records_out", sent)
            if spec.live:  # a replay's ts_recv is the recording's: its "latency" would be years
                self._observe_latency(slot, batch["ts_recv"], time.time_ns())
            if late != self.late_seen:
                slot.add("late", late - self.late_seen)
        self.late_seen = late

    def _symbol_journaler(self, ring_index: int):
        journal = self.journal
        assert journal is not None
        return lambda instrument, symbol: journal.append_symbol(ring_index, instrument, symbol,
                                                                self.publisher.messages_out)

    def drain(self) -> bool:
        """One read of every ring; whether there was anything to read."""
        worked = False
        for i, ring in enumerate(self.rings):
            if self.spec.live:
                journal = self.journal
                sym_idx = None
                if journal is None:
                    batch = ring.consume(_MAX_BATCH)
                else:  # on disk before the ring lets go of it and before the calculators see it
                    # The ring copies the batch straight into the journal's room for it (made
                    # only when there is a batch: most drains at live rates find the ring empty).
                    journal_room = journal.reserve_records(_MAX_BATCH) if ring.fill else None
                    batch = ring.consume(_MAX_BATCH, out=journal_room, release=False)
                    if len(batch):
                        sym_idx = self.maps[i].indices(batch)  # new symbols journaled first
                        position = ring.consumed
                        batch = journal.append_records(i, position, batch, self.publisher.messages_out)
                        ring.release_to(position + len(batch))
                        self.journaled_to[i] = position + len(batch)
                if len(batch):
                    worked = True
                    self.consume(i, batch, sym_idx)
                continue
            # Replay: cut the stream at fixed positions (multiples of _MAX_BATCH records), never
            # where a consume happened to stop, so per-batch outputs (VWAP, indicators, books)
            # are the same in every run.
            room = _MAX_BATCH - ring.consumed % _MAX_BATCH
            batch = ring.consume(room)  # a private copy: the ring may reuse its slots at once
            if len(batch):
                worked = True
                self.pending[i].append(batch)
                if len(batch) == room:
                    self.consume(i, join(self.pending[i]))
                    self.pending[i].clear()
        return worked

    def tick(self, now: int) -> None:
        """Every clock period: heartbeat, and (live) close the bars whose end their feed's clock
        has passed (`feed_clock`; docs/calculators.md, "Bar timing")."""
        if now < self._next_clock:
            return
        self.slot.heartbeat()
        for ring in self.rings:  # the ring header's consumer heartbeat, beside the producer's
            ring.consumer_heartbeat()
        if self.spec.live:
            # A ring with records unread is a backlog, not a quiet feed: its clock waits for them.
            clocks = [clock.time(now, quiet=ring.fill == 0, alive_at=ring.producer_heartbeat_ns)
                      for clock, ring in zip(self.clocks, self.rings, strict=True)]
            carried = [symbols.carried() for symbols in self.maps]
            by_symbol = symbol_clocks(clocks, carried, len(self.symbols))
            closed = self.calc.on_clock(by_symbol)
            if closed and self.journal is not None:  # a clock that closed nothing changed nothing
                self.journal.append_clock(by_symbol, self.publisher.messages_out)
            self._publish(closed)
        if self.journal is not None:
            self.journal.tick()
            if self.checkpoints is not None and self.checkpoints.due(self.journal.records):
                self.checkpoints.take(self, self.journaled_to)  # between two entries: all processed
            if now >= self._next_detail:  # `status`: the journal's file and size, once a second
                self._next_detail = now + 1_000_000_000
                written = f"journal {self.journal.path.name if self.journal.path else '-'} " \
                          f"+{self.journal.bytes / 1e6:.1f} MB"
                self.slot.set("detail", f"{written}; {self.restored}" if self.restored else written)
        self._next_clock = now + _CLOCK_PERIOD_NS

    def finish(self) -> None:
        """At stop: drain what the (already stopped) feeds handed over, then flush the open bars."""
        deadline = time.monotonic() + _DRAIN_SECONDS
        while self.drain() and time.monotonic() < deadline:
            self.slot.heartbeat()
        for i, parts in enumerate(self.pending):
            if parts:
                self.consume(i, join(parts))
                parts.clear()
        if self.spec.calculators.bars.flush_on_stop:
            if self.journal is not None:
                self.journal.append_flush(self.publisher.messages_out)
            self._publish(self.calc.flush())

    def _publish(self, outputs: Messages) -> None:
        if outputs:
            self.publisher.publish_messages(outputs)
            self.slot.add("records_out", len(outputs))

    def close(self, code: int) -> None:
        """Say goodbye on the bus, release every segment and mark the slot."""
        name = self.spec.name
        # The last message on this publisher's pipe: a recorder knows everything before it arrived.
        self.publisher.publish(topic("event", name),
                               Event(source=name, kind="stopped", message=f"exit code {code}", ts=time.time_ns()))
        self.publisher.close()
        if self.journal is not None:
            self.journal.close()
        if self.checkpoints is not None:
            self.checkpoints.close()
        for ring in self.rings:
            ring.close()
        for reg in self.registries:
            reg.close()
        self.child.close(failed=code != 0)


def run_worker(spec: WorkerSpec) -> int:
    """Process entry point (spawned by the supervisor). Returns the exit code."""
    return Worker(spec).run()


def worker_main(spec: WorkerSpec) -> None:
    """`multiprocessing` target: run and exit with the worker's code."""
    raise SystemExit(run_worker(spec))
