"""One market-data subscription of a venue client: its records of the tape, paced, as IB messages.

Every subscription plays its instrument's records from the start of the tape, paced from the
moment it was made (``speed`` x data time) or at full speed, so a client that subscribes to
trades and quotes one after the other misses nothing. Depth keeps the instrument's whole book
per side and sends the insert/update/delete row operations that turn the client's top
``rows`` into the new top ``rows`` after each record, as TWS does.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from streamctl.shm.records import UNDEF_PRICE, Kind, Side

__all__ = ["Stream", "price_text", "size_text"]

_SCALE = 1_000_000_000


def price_text(p: int) -> str:
    """A fixed-point price as the exact decimal TWS would print (``5500.25``)."""
    q, r = divmod(abs(p), _SCALE)
    sign = "-" if p < 0 else ""
    return f"{sign}{q}" if not r else f"{sign}{q}.{r:09d}".rstrip("0")


def size_text(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else repr(float(s))


@dataclass
class Stream:
    """One subscription: what it sends (`what`), where it is in its records, its book for depth."""

    req_id: int
    what: str
    """``trades`` (tick type `tick_type` 1 Last / 2 AllLast), ``quotes`` (3 BidAsk),
    ``midpoint`` (4 MidPoint) or ``depth``."""
    positions: np.ndarray
    start: float
    tick_type: int = 2
    rows: int = 0
    smart: bool = False
    exchange: str = ""
    cursor: int = 0
    _book: tuple[dict[int, float], dict[int, float]] = field(default_factory=lambda: ({}, {}))
    _shown: tuple[list[tuple[int, float]], list[tuple[int, float]]] = field(default_factory=lambda: ([], []))

    @property
    def done(self) -> bool:
        return self.cursor >= len(self.positions)

    def restart(self, now: float) -> list[list[object]]:
        """Back to the start of the tape (looping); depth rows are deleted first."""
        self.cursor = 0
        self.start = now
        out: list[list[object]] = []
        for side in (0, 1):
            self._book[side].clear()
            out.extend(self._diff(side))
        return out

    def messages(self, records: np.ndarray, upto: int) -> list[list[object]]:
        """The messages for this stream's records from the cursor up to tape position `upto` (exclusive)."""
        stop = int(np.searchsorted(self.positions, upto, side="left"))
        out: list[list[object]] = []
        for pos in self.positions[self.cursor:stop].tolist():
            out.extend(self._encode(records[pos]))
        self.cursor = max(self.cursor, stop)
        return out

    def _encode(self, r) -> list[list[object]]:
        req = self.req_id
        sec = int(r["ts_event"]) // _SCALE
        kind = int(r["kind"])
        if self.what == "trades":
            return [[99, req, self.tick_type, sec, price_text(int(r["price"])), size_text(r["size"]), 0,
                     self.exchange, ""]]
        if self.what in ("quotes", "midpoint"):
            bid, ask = int(r["price"]), int(r["price2"])
            if self.what == "midpoint":
                if bid == UNDEF_PRICE or ask == UNDEF_PRICE:
                    return []
                return [[99, req, 4, sec, price_text((bid + ask) // 2)]]
            bid_size = 0.0 if bid == UNDEF_PRICE else r["size"]
            ask_size = 0.0 if ask == UNDEF_PRICE else r["size2"]
            return [[99, req, 3, sec, "0" if bid == UNDEF_PRICE else price_text(bid),
                     "0" if ask == UNDEF_PRICE else price_text(ask), size_text(bid_size), size_text(ask_size), 0]]
        if kind == Kind.RESET:
            for book in self._book:
                book.clear()
            return self._diff(0) + self._diff(1)
        side = 1 if int(r["side"]) == Side.BID else 0
        price, size = int(r["price"]), float(r["size"])
        book = self._book[side]
        if size > 0:
            book[price] = size
        else:
            book.pop(price, None)
        return self._diff(side)

    def _diff(self, side: int) -> list[list[object]]:
        """Row operations turning the shown rows of `side` into the book's new top `rows`.

        Rows that changed are updated in place, new rows inserted at the end and surplus rows
        deleted from the end, as TWS does: a client that shifts rows on insert and delete and
        one that treats positions as fixed slots (``ib_async``) see the same rows.
        """
        book = self._book[side]
        top = heapq.nlargest(self.rows, book) if side == 1 else heapq.nsmallest(self.rows, book)
        new = [(p, book[p]) for p in top]
        cur = self._shown[side]
        ops: list[list[object]] = []
        for i in range(min(len(cur), len(new))):
            if cur[i] != new[i]:
                ops.append(self._op(i, 1, side, *new[i]))
        for i in range(len(cur), len(new)):
            ops.append(self._op(i, 0, side, *new[i]))
        for i in range(len(cur) - 1, len(new) - 1, -1):
            ops.append(self._op(i, 2, side, *cur[i]))
        self._shown = (new, self._shown[1]) if side == 0 else (self._shown[0], new)
        return ops

    def _op(self, position: int, operation: int, side: int, price: int, size: float) -> list[object]:
        if self.smart:
            return [13, 1, self.req_id, position, self.exchange, operation, side, price_text(price),
                    size_text(size), 1]
        return [12, 1, self.req_id, position, operation, side, price_text(price), size_text(size)]
