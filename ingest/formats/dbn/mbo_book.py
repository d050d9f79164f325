"""Market-by-order book state: turns DBN MBO events into price-level updates.

A vendor that sends individual orders (Databento MBO, "L3") is normalized into the one
record layout by keeping every resting order (order id -> side, price, size) and the total
size of every price level, and emitting one `Kind.BOOK` record per level whose total changed.
Workers then only need a price-level book.

Semantics (Databento MBO normalization, checked against its docs and the sample data):

- ``A`` add: a new order; its level grows by ``size``.
- ``C`` cancel: ``size`` is the quantity cancelled (full or partial); the order shrinks by it
  and leaves the book at 0. The stored price/side of the order are used, not the record's.
- ``M`` modify: ``price``/``size`` are the order's new values; a price or side change moves
  the order (two level updates). A modify of an unknown order is treated as an add.
- ``R`` clear: every order and level of the instrument is dropped; one `Kind.RESET` record.
- ``T`` trade: one `Kind.TRADE` record (side = aggressor). ``F`` fill and ``N`` none: nothing.
  Trades and fills never change the book: the cancels/modifies that follow them do.

State lives in open-addressing hash tables (linear probing, backward-shift deletion) in
numpy arrays, updated by numba kernels (`streamctl.ingest.formats.dbn.kernels`; the DBN decoder runs
them fused with its record conversion): no Python object per order.
Books are keyed by vendor instrument id only (not publisher); top-of-book-only venues
(records flagged ``F_TOB``) are not supported and are counted as ``mbo_tob``.
"""

from __future__ import annotations

import numpy as np

from streamctl.ingest.formats.dbn.kernels import MBO_ANOMALIES, apply_mbo, levels_of, rehash
from streamctl.shm.records import RECORD_DTYPE, Side

__all__ = ["MboBook", "MBO_ANOMALIES"]

_ORDER_INSTRUMENT = (2, 1)
"""(column, divisor) giving an order's instrument: order keys hold it in column 2."""
_LEVEL_INSTRUMENT = (1, 4)
"""(column, divisor) giving a level's instrument: level keys hold ``instrument * 4 + side``."""


def _order_table(slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Order keys (hash, order id, instrument, side, price, size) and no value columns: the
    whole order lives in its key row, one cache line."""
    return np.zeros((slots, 6), np.uint64), np.zeros((slots, 0), np.int64)


def _level_table(slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Level keys (hash, instrument * 4 + side, price) and values (total size)."""
    return np.zeros((slots, 3), np.uint64), np.zeros((slots, 1), np.int64)


class MboBook:
    """Per-instrument order and level state of an MBO stream; `apply` one batch at a time.

    The tables grow (doubling) whenever they pass half full, so memory follows the number
    of resting orders, not the number of events.
    """

    def __init__(self, *, capacity: int = 1 << 12, level_capacity: int = 1 << 10):
        order_slots = 1 << max(4, (int(capacity) - 1).bit_length())
        level_slots = 1 << max(4, (int(level_capacity) - 1).bit_length())
        self._order_keys, self._order_vals = _order_table(order_slots)
        self._level_keys, self._level_vals = _level_table(level_slots)
        self._counts = np.zeros(2, np.int64)  # resting orders, levels

    def sized_like(self) -> MboBook:
        """An empty book with this one's table sizes: a replay loop rebuilds the same book
        every pass, and regrowing the tables each time cost as much as decoding."""
        return MboBook(capacity=self._order_keys.shape[0], level_capacity=self._level_keys.shape[0])

    @property
    def orders(self) -> int:
        """Number of resting orders over all instruments."""
        return int(self._counts[0])

    @property
    def levels(self) -> int:
        """Number of non-empty price levels over all instruments."""
        return int(self._counts[1])

    def apply(
        self,
        *,
        instrument_id: np.ndarray,
        order_id: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        action: np.ndarray,
        side: np.ndarray,
        flags: np.ndarray,
        ts_event: np.ndarray,
        ts_recv: np.ndarray,
        sequence: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Apply a batch of MBO events (parallel arrays, DBN field types; `action`/`side` as
        uint8 ASCII codes) in order.

        Returns ``(records, source, counters)``: the emitted `RECORD_DTYPE` records (with the
        vendor instrument id), for each record the index of the event that produced it, and
        non-zero counters: `MBO_ANOMALIES` plus ``malformed`` (an action or side byte that is
        not one of DBN's).
        """
        n = len(instrument_id)
        out = np.empty(2 * n, dtype=RECORD_DTYPE)
        out_words = out.view(np.uint64).reshape(-1, 8)
        out_floats = out.view(np.float64).reshape(-1, 8)
        source = np.empty(2 * n, np.int64)
        stats = np.zeros(len(MBO_ANOMALIES) + 1, np.int64)
        args = (
            np.ascontiguousarray(instrument_id, np.uint32),
            np.ascontiguousarray(order_id, np.uint64),
            np.ascontiguousarray(price, np.int64),
            np.ascontiguousarray(size, np.uint32),
            np.ascontiguousarray(action, np.uint8),
            np.ascontiguousarray(side, np.uint8),
            np.ascontiguousarray(flags, np.uint8),
            np.ascontiguousarray(ts_event, np.int64),
            np.ascontiguousarray(ts_recv, np.int64),
            np.ascontiguousarray(sequence, np.uint64),
        )
        start, nout = 0, 0
        while True:
            start, nout = apply_mbo(*self.tables, self._counts, stats, start, *args, out_words, out_floats, source,
                                    nout)
            if start >= n:
                break
            self.grow()
        counters = {name: int(v) for name, v in zip((*MBO_ANOMALIES, "malformed"), stats, strict=True) if v}
        return out[:nout], source[:nout], counters

    @property
    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(order keys, order values, level keys, level values) for the numba kernels; the
        arrays are replaced by `grow`, so fetch them again after growing."""
        return self._order_keys, self._order_vals, self._level_keys, self._level_vals

    @property
    def counts(self) -> np.ndarray:
        """[resting orders, levels], updated in place by the kernels."""
        return self._counts

    def grow(self) -> None:
        """Double whichever table is at least half full."""
        if (self._counts[0] + 1) > self._order_keys.shape[0] // 2:
            new_keys, new_vals = _order_table(self._order_keys.shape[0] * 2)
            self._counts[0] = rehash(self._order_keys, self._order_vals, new_keys, new_vals, -1, *_ORDER_INSTRUMENT)
            self._order_keys, self._order_vals = new_keys, new_vals
        if (self._counts[1] + 2) > self._level_keys.shape[0] // 2:
            new_keys, new_vals = _level_table(self._level_keys.shape[0] * 2)
            self._counts[1] = rehash(self._level_keys, self._level_vals, new_keys, new_vals, -1, *_LEVEL_INSTRUMENT)
            self._level_keys, self._level_vals = new_keys, new_vals

    def levels_of(self, instrument_id: int, side: Side) -> list[tuple[int, int]]:
        """All ``(price, total size)`` levels of one side, best first (for tests and snapshots)."""
        prices = np.empty(self._level_keys.shape[0], np.int64)
        sizes = np.empty(self._level_keys.shape[0], np.int64)
        n = levels_of(self._level_keys, self._level_vals, int(instrument_id), int(side), prices, sizes)
        return sorted(zip(prices[:n].tolist(), sizes[:n].tolist(), strict=True), reverse=(side == Side.BID))
