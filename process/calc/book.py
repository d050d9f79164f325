"""Price-level books of all symbols, from BOOK and RESET records.

Each side of each symbol is a sorted array of levels, best first, in preallocated
``(symbols, 2, L)`` arrays: the key is ``-price`` for bids and ``price`` for asks, so both
sides sort ascending. A BOOK record sets a level's size (size 0 removes it); a RESET clears
the symbol's book. When a side is full the kernel stops, `L` doubles and the batch resumes
where it stopped. After a batch, every symbol whose book changed gets one `Book` payload
(its top ``depth`` levels each side), in ascending local index, but only once its last book
record closed an event (``Flag.LAST``, per instrument as in DBN; a RESET closes its own): a
vendor event that moves an order writes two levels, and a book published between them would be
wrong. A book left mid-event by a batch's end is published after the batch that completes it.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.bus.messages import MessageWriter
from streamctl.bus.wire import Book, topic
from streamctl.process.calc.batch import (
    FLAGS_SHIFT,
    KIND_SHIFT,
    META,
    PRICE,
    SIDE_SHIFT,
    SIZE,
    TS_EVENT,
    TS_RECV,
)
from streamctl.process.calc.settings import BookConfig
from streamctl.process.calc.state import SymbolArrays
from streamctl.shm.records import UNDEF_PRICE, Flag, Kind, Side

__all__ = ["BookCalc", "apply_book"]

_BOOK, _RESET = int(Kind.BOOK), int(Kind.RESET)
_BID, _ASK = int(Side.BID), int(Side.ASK)
_LAST = int(Flag.LAST)
_UNDEF = np.int64(UNDEF_PRICE)
_LOWEST = np.int64(np.iinfo(np.int64).min)
_INITIAL_LEVELS = 64
BAD_BOOK, MISSING_LEVEL = 0, 1
_LEVEL_ARRAYS = frozenset({"keys", "sizes"})
"""The arrays whose level axis grows with the busiest side (a checkpoint may hold more levels)."""


@numba.njit(cache=True, nogil=True, error_model="numpy")
def apply_book(rows_int, rows_float, sym, nsym, start, keys, sizes, count, changed, mid_event, last, counts):
    """Apply BOOK/RESET records from row `start`; return the row it stopped at.

    Stops early (returns that row) when a side has no room for a new level. ``counts``:
    [bad book records, removals of a level that did not exist]. ``changed[s] = 1`` marks
    symbols whose book changed since it was last published, ``mid_event[s] = 1`` those whose
    last applied record did not close its event; ``last[s]`` holds their last (ts_event, ts_recv).
    """
    cap = keys.shape[2]
    for i in range(start, rows_int.shape[0]):
        s = sym[i]
        if s < 0 or s >= nsym:
            continue
        kind = (rows_int[i, META] >> KIND_SHIFT) & 0xFF
        if kind == _RESET:
            count[s, 0] = 0
            count[s, 1] = 0
            mid_event[s] = 0
        elif kind == _BOOK:
            side = (rows_int[i, META] >> SIDE_SHIFT) & 0xFF
            price = rows_int[i, PRICE]
            size = rows_float[i, SIZE]
            if (side != _BID and side != _ASK) or price == _UNDEF or price == _LOWEST \
                    or not (size >= 0.0) or not (size < np.inf):
                counts[BAD_BOOK] += 1
                continue
            mid_event[s] = 0 if (rows_int[i, META] >> FLAGS_SHIFT) & _LAST else 1
            d = 0 if side == _BID else 1
            key = -price if d == 0 else price
            n = count[s, d]
            pos = np.searchsorted(keys[s, d, :n], key)
            found = pos < n and keys[s, d, pos] == key
            if size == 0.0:
                if not found:
                    counts[MISSING_LEVEL] += 1
                    continue
                for k in range(pos, n - 1):
                    keys[s, d, k] = keys[s, d, k + 1]
                    sizes[s, d, k] = sizes[s, d, k + 1]
                count[s, d] = n - 1
            elif found:
                sizes[s, d, pos] = size
            else:
                if n == cap:
                    return i
                for k in range(n, pos, -1):
                    keys[s, d, k] = keys[s, d, k - 1]
                    sizes[s, d, k] = sizes[s, d, k - 1]
                keys[s, d, pos] = key
                sizes[s, d, pos] = size
                count[s, d] = n + 1
        else:
            continue
        changed[s] = 1
        last[s, 0] = rows_int[i, TS_EVENT]
        last[s, 1] = rows_int[i, TS_RECV]
    return rows_int.shape[0]


class BookCalc:
    """Level books of all symbols; `update` applies a batch and publishes changed books."""

    def __init__(self, config: BookConfig, capacity: int):
        self.depth = config.depth
        self.state = st = SymbolArrays(capacity)
        st.add("keys", (2, _INITIAL_LEVELS), np.int64, 0)
        st.add("sizes", (2, _INITIAL_LEVELS), np.float64, 0.0)
        st.add("count", (2,), np.int64, 0)
        st.add("changed", (), np.int64, 0)
        st.add("mid_event", (), np.int64, 0)
        st.add("last", (2,), np.int64, 0)
        self.counts = np.zeros(2, dtype=np.int64)
        """[bad book records, removals of a missing level]"""
        self._symbols: list[str] = []
        self._topics: list[str] = []

    def resize(self, capacity: int) -> None:
        self.state.resize(capacity)

    def add_symbol(self, symbol: str) -> None:
        self._symbols.append(symbol)
        self._topics.append(topic("book", symbol))

    def export_state(self, into: dict | None = None) -> dict:
        """Every symbol's levels and pending-event marks (a checkpoint's part)."""
        return self.state.export(len(self._symbols), into)

    def load_state(self, state: dict) -> None:
        self.state.load(state, len(self._symbols), grow=_LEVEL_ARRAYS)

    @property
    def levels(self) -> int:
        """Current level capacity per side."""
        return self.state["keys"].shape[2]

    def update(self, rows_int, rows_float, sym, out: MessageWriter) -> None:
        """Apply the batch's BOOK/RESET records; append one Book per changed symbol whose event
        is complete to `out`."""
        st = self.state
        nsym = len(self._symbols)
        row = 0
        while row < len(rows_int):
            row = apply_book(rows_int, rows_float, sym, nsym, row, st["keys"], st["sizes"], st["count"],
                             st["changed"], st["mid_event"], st["last"], self.counts)
            if row < len(rows_int):
                levels = 2 * self.levels
                st.reshape_tail("keys", (2, levels))
                st.reshape_tail("sizes", (2, levels))
        changed = np.flatnonzero((st["changed"][:nsym] == 1) & (st["mid_event"][:nsym] == 0))
        st["changed"][changed] = 0
        depth = self.depth
        for s in changed.tolist():
            books = []
            for d in (0, 1):
                n = min(depth, int(st["count"][s, d]))
                keys = st["keys"][s, d, :n]
                prices = ((-keys if d == 0 else keys) / 1e9).tolist()
                books.append(list(zip(prices, st["sizes"][s, d, :n].tolist(), strict=True)))
            ev, recv = st["last"][s].tolist()
            out.add(self._topics[s], Book(symbol=self._symbols[s], depth=depth, bids=books[0], asks=books[1],
                                          ts_event=ev, ts_recv=recv))
