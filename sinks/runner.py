"""The sink loop: messages in, rows batched, batches into the store, never slowing the plant.

A sink is a subscriber like any application. Rows wait in a bounded backlog and go to the
store in batches (`batch_rows` rows, or after `batch_seconds`), at most one batch between
two reads of the socket, so a slow store never leaves the subscription unread. A store that is
down (at start or later) is retried with the plant's one reconnect policy while the backlog
fills; rows beyond `backlog_rows` are counted as ``overflow``. What the sink did not store is
asked back from the plant's history (`HistoryFn`, the subscriber's `history_after`): the rows
it dropped, once a write has succeeded again (asking while the backlog is still full would drop
them again); a sequence gap the subscriber could not fill; and at start, what came after the
last seq the store holds per topic. The stores write idempotently on natural keys, so overlap
with live rows costs nothing. What the history no longer holds is counted in ``gaps`` and
reported as one ``gap`` event per topic and seq range. After `max_failures` failed attempts
in a row the sink gives up (`SinkFailed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from streamctl.bus.lifecycle import ChildSlot
from streamctl.bus.wire import BATCHED_KINDS, EventKind
from streamctl.client import SequenceGap, Subscriber
from streamctl.sinks.rows import TABLE_OF_KIND, TABLES, Row, Table
from streamctl.sinks.settings import SinkConfig
from streamctl.sinks.stores import Store, StoreDown

__all__ = ["Sink", "SinkFailed", "Counters", "EventFn", "HistoryFn"]

log = logging.getLogger("streamctl.sink")

EventFn = Callable[[str, str], None]
"""Receives (event kind, message); the process publishes it as ``event.sink-<name>``."""

HistoryFn = Callable[[str, int, int | None], tuple[list[Any], bool]]
"""(topic, after seq, through seq or None) -> (payloads, complete): `Subscriber.history_after`."""


class Counters:
    """What the loop counts and its state, written where `status` reads them: the sink
    process's slot in the process table (`streamctl.bus.lifecycle.ChildSlot`)."""

    def __init__(self, child: ChildSlot):
        self.child = child

    def add(self, field: str, n: int = 1) -> None:
        if n:
            self.child.slot.add(field, n)

    def set(self, field: str, value: Any) -> None:
        self.child.slot.set(field, value)

    def ready(self) -> None:
        self.child.ready()
        self.set("detail", "")

    def reconnecting(self, detail: str) -> None:
        self.child.reconnecting()
        self.set("detail", detail)


class SinkFailed(Exception):
    """The store stayed unreachable for `reconnect.max_failures` attempts in a row."""


class Sink:
    """One sink's loop around a `Store` (see the module docstring)."""

    def __init__(self, config: SinkConfig, store: Store, counters: Counters, on_event: EventFn, *,
                 history: HistoryFn | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.store = store
        self._counters = counters
        self._event = on_event
        self._clock = clock
        self._row_of = {t: t.row_of() for t in TABLES}
        self._backlog: dict[Table, list[Row]] = {t: [] for t in TABLES}
        self.pending = 0
        """Rows received and not yet in the store."""
        self._oldest: float | None = None
        self.connected = False
        self._attempt = 0
        self._retry_at = 0.0
        self._overflowing = False
        self._history = history
        self._dropped: dict[str, tuple[Table, int, int]] = {}
        """Per topic, its table and the first and last seq dropped from a full backlog, asked
        back from the history after the next successful write."""
        self._resumed = False

    # ------------------------------------------------------------------ in
    def attach(self, sub: Subscriber) -> None:
        """Subscribe to the configured topics and route each stored kind into its table."""
        sub.on_message(self._on_message)
        sub.on_error(self._on_error)
        sub.subscribe(*self.config.topics)

    def _on_message(self, topic: str, payload: Any) -> None:
        kind = topic.partition(".")[0]
        table = TABLE_OF_KIND.get(kind)
        if table is None:  # a prefix such as "" also brings status and events: not stored
            return
        self.take(topic, table, payload if kind in BATCHED_KINDS else [payload])

    def take(self, topic: str, table: Table, payloads: list[Any]) -> None:
        """Queue the rows of `payloads` (one message of `topic`) for `table`."""
        n = len(payloads)
        self._counters.add("records_in", n)
        room = self.config.backlog_rows - self.pending
        if room < n:
            self._overflow(topic, table, payloads, max(room, 0))
            payloads = payloads[:max(room, 0)]
        if not payloads:
            return
        row_of = self._row_of[table]
        self._backlog[table].extend(row_of(p) for p in payloads)
        self.pending += len(payloads)
        if self._oldest is None:
            self._oldest = self._clock()
        self._counters.set("backlog", self.pending)

    def _overflow(self, topic: str, table: Table, payloads: list[Any], kept: int) -> None:
        """Count the rows of `payloads` past `kept` as dropped and remember their seqs (from the
        message's first: the history hands back whole messages)."""
        self._counters.add("overflow", len(payloads) - kept)
        first, last = payloads[0].seq, payloads[-1].seq
        _, was_first, _ = self._dropped.get(topic, (table, first, last))
        self._dropped[topic] = (table, min(first, was_first), last)
        if not self._overflowing:
            self._overflowing = True
            self._event(EventKind.ERROR, f"backlog full ({self.config.backlog_rows} rows) while the store is "
                                         f"{'slow' if self.connected else 'down'}: dropping rows from {topic} "
                                         f"seq {payloads[kept].seq} on, to be asked back from the plant's history")

    def _on_error(self, err: Exception) -> None:
        if isinstance(err, SequenceGap):
            if err.topic.partition(".")[0] in TABLE_OF_KIND:  # a prefix such as "" also brings events
                self._recover(err.topic, err.expected - 1, err.got - 1)
        else:
            self._counters.add("malformed")

    def _recover(self, topic: str, after: int, through: int | None) -> None:
        """Queue `topic`'s rows after seq `after` (through `through`) from the plant's history;
        count and report the seqs it no longer holds (all of them, with no history to ask)."""
        messages, _ = self._history(topic, after, through) if self._history is not None else ([], False)
        table = TABLE_OF_KIND[topic.partition(".")[0]]
        batched = table.kind in BATCHED_KINDS
        held = [p.seq for m in messages for p in (m if batched else [m])]
        end = through if through is not None else (min(held) - 1 if held else after)
        missing = len(set(range(after + 1, end + 1)) - set(held))
        if missing:
            self._counters.add("gaps", missing)
            self._event(EventKind.GAP, f"`{topic}` seq {after + 1}..{end}: {missing} messages not in the store "
                                       "and not in the plant's history")
        for message in messages:
            self.take(topic, table, message if batched else [message])

    # ------------------------------------------------------------------ out
    def step(self, *, force: bool = False) -> bool:
        """Connect when a retry is due, then write one batch if one is due (any rows, with
        `force`). True when rows are still waiting for a write that could go now."""
        now = self._clock()
        if not self.connected:
            if now < self._retry_at:
                return False
            self._connect()
            if not self.connected:
                return False
        try:
            self.store.tick()
        except StoreDown as exc:
            self._store_failed(exc, connecting=False)
            return False
        if not self.pending:
            return False
        if force or self.pending >= self.config.batch_rows or now - (self._oldest or now) >= self.config.batch_seconds:
            self._write()
        return self.connected and self.pending >= self.config.batch_rows

    def next_due(self) -> float:
        """Seconds until `step` has something to do (a retry or a batch's age), at most 1
        (the store's `tick`)."""
        now = self._clock()
        if not self.connected:
            return min(max(self._retry_at - now, 0.0), 1.0)
        if self._oldest is None:
            return 1.0
        return min(max(self._oldest + self.config.batch_seconds - now, 0.0), 1.0)

    def _connect(self) -> None:
        try:
            self.store.open()
            held = self.store.held()
        except StoreDown as exc:
            self._store_failed(exc, connecting=True)
            return
        self.connected = True
        if self._attempt:
            self._counters.add("reconnects")
            self._event(EventKind.RECONNECT, f"store back on attempt {self._attempt}")
        else:
            self._event(EventKind.CONNECTED, f"store open; it holds {len(held)} topic/publisher pairs")
        self._attempt = 0
        self._counters.ready()
        if not self._resumed:  # resume: what the history has after what the store holds
            self._resumed = True
            for topic, _src, seq in held:
                self._recover(topic, seq, None)

    def _write(self) -> None:
        batch: dict[Table, list[Row]] = {}
        left = self.config.batch_rows
        for table, rows in self._backlog.items():
            if rows and left > 0:
                batch[table] = rows[:left]
                left -= len(batch[table])
        size = sum(len(rows) for rows in batch.values())
        try:
            new = self.store.write(batch)
        except StoreDown as exc:
            self._store_failed(exc, connecting=False)
            return
        for table, rows in batch.items():
            del self._backlog[table][:len(rows)]
        self.pending -= size
        self._oldest = self._clock() if self.pending else None
        self._overflowing = False
        self._counters.add("records_out", new)
        self._counters.set("backlog", self.pending)
        newest = max((rows[-1][table.index("ts_recv")] for table, rows in batch.items()), default=None)
        if newest is not None:
            self._counters.set("lag_ns", time.time_ns() - int(newest))
        self._refill()

    def _refill(self) -> None:
        """Ask the history for dropped rows, as many per topic as the backlog has room for; the
        rest stays remembered for the next write."""
        for topic in list(self._dropped):
            room = self.config.backlog_rows - self.pending
            if room <= 0:
                return
            table, first, last = self._dropped.pop(topic)
            through = min(last, first + room - 1)
            if through < last:
                self._dropped[topic] = (table, through + 1, last)
            self._recover(topic, first - 1, through)

    def _store_failed(self, exc: StoreDown, *, connecting: bool) -> None:
        self.connected = False
        _close_quietly(self.store)
        self._counters.add("errors")
        policy = self.config.reconnect
        if self._attempt >= policy.max_failures:
            raise SinkFailed(f"store unreachable after {self._attempt} attempts; last error: {exc}")
        self._attempt += 1
        wait = policy.delay(self._attempt)
        self._retry_at = self._clock() + wait
        where = f"retrying in {wait:.3g} s (attempt {self._attempt} of {policy.max_failures})"
        kind = EventKind.RECONNECT_FAILED if connecting else EventKind.DISCONNECT
        self._event(kind, f"store: {exc}; {where}; {self.pending} rows waiting")
        self._counters.reconnecting(f"store down: {where}")

    def close(self, timeout: float) -> int:
        """Write what is waiting (for at most `timeout` s while the store is up), close the
        store, and return the rows that could not be written."""
        deadline = self._clock() + timeout
        while self.pending and self._clock() < deadline:
            if not self.connected and self._retry_at > deadline:
                break
            self.step(force=True)
            if not self.connected:
                time.sleep(min(self.next_due(), 0.05))
        _close_quietly(self.store)
        self.connected = False
        return self.pending


def _close_quietly(store: Store) -> None:
    try:
        store.close()
    except Exception as exc:  # noqa: BLE001 - a failing close must not hide why the store went
        log.debug("closing the store: %s", exc)
