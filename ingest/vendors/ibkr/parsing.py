"""IB market-data messages -> records: tick-by-tick trades and quotes, L2 depth into book levels.

Layouts read (no version field in tick-by-tick; server versions 164..178)::

    99, reqId, 1|2, time, price, size, attrMask, exchange, specialConditions     Last / AllLast
    99, reqId, 3, time, bidPrice, askPrice, bidSize, askSize, attrMask            BidAsk
    99, reqId, 4, time, midPoint                                                  MidPoint (ignored)
    12, 1, reqId, position, operation, side, price, size                          updateMktDepth
    13, 1, reqId, position, marketMaker, operation, side, price, size, isSmart    updateMktDepthL2

``time`` is in whole seconds (IB sends no finer stamp), so ``ts_event`` of a tick is a multiple
of one second. Depth rows are positions (0 = best), changed by insert/update/delete (operation
0/1/2); `DepthRows` keeps the rows and turns each change into price-level BOOK records (a size
of 0 removes a level). TWS sends one book change as several row messages, so only the last
BOOK record of each instrument in a batch is flagged LAST. Depth messages carry no time: their ``ts_event`` is the receive time. Trades carry no aggressor side (side NONE).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from streamctl.ingest.vendors.ibkr import kernels
from streamctl.ingest.vendors.ibkr.protocol import MAX_FRAME
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Flag, Kind, Side, float_to_price

__all__ = ["MarketData", "DepthRows", "Subscription", "Scanned", "number", "integer"]

_SCAN_FRAMES = 1 << 16
"""Frames one kernel call handles at most (its output columns are this long)."""

_SECOND = 1_000_000_000
_STAGE = np.dtype([("order", "<i8"), ("ts", "<i8"), ("px", "<f8"), ("px2", "<f8"), ("sz", "<f8"), ("sz2", "<f8"),
                   ("iid", "<u4"), ("kind", "u1"), ("side", "u1"), ("flags", "u1")])
_LAST = int(Flag.LAST)
_TRADE, _QUOTE, _BOOK = int(Kind.TRADE), int(Kind.QUOTE), int(Kind.BOOK)
_BID, _ASK, _NONE = int(Side.BID), int(Side.ASK), int(Side.NONE)


_DECIMAL = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INTEGER = re.compile(rb"-?[0-9]+")


def number(text: bytes) -> float:
    """A decimal field as the API writes it (``-12.5``, ``1E-8``). ValueError for anything else:
    Python's ``float()`` would also read ``1_5`` (as 15), `` 2``, ``nan``, ``inf`` and other
    scripts' digits; and for a value too large to be finite."""
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"not a decimal number: {text[:24]!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"a number past the float range: {text[:24]!r}")
    return value


def integer(text: bytes) -> int:
    """An integer field (``-12``); ValueError for anything else (``int()`` reads ``1_0`` and `` 7``)."""
    if _INTEGER.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text[:24]!r}")
    return int(text)


def _seconds(text: bytes) -> int:
    """A tick's time (whole seconds) as ns; ValueError if int64 ns cannot hold it (it would wrap)."""
    seconds = integer(text)
    if not -kernels.MAX_SECONDS <= seconds <= kernels.MAX_SECONDS:
        raise ValueError(f"a time of {text[:24]!r} s is beyond int64 nanoseconds")
    return seconds * _SECOND


class DepthRows:
    """The rows of one depth subscription, each side a list of ``[price, size]`` by position."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids: list[list[float]] = []
        self.asks: list[list[float]] = []

    def apply(self, position: int, operation: int, side: int, price: float, size: float) -> list[tuple[float, float]]:
        """Apply one change; the (price, size) levels it changed (size 0: the level is gone).

        Raises ValueError for a position the rows do not have or an unknown operation or side.
        """
        if side not in (0, 1):
            raise ValueError(f"depth side must be 0 or 1, was {side}")
        rows = self.bids if side == 1 else self.asks
        if operation == 0:
            if not 0 <= position <= len(rows):
                raise ValueError(f"insert at position {position} of {len(rows)} rows")
            rows.insert(position, [price, size])
            return [(price, size)]
        if not 0 <= position < len(rows):
            raise ValueError(f"operation {operation} at position {position} of {len(rows)} rows")
        if operation == 1:
            old = rows[position][0]
            rows[position] = [price, size]
            return [(price, size)] if old == price else [(old, 0.0), (price, size)]
        if operation == 2:
            old = rows.pop(position)[0]
            return [(old, 0.0)]
        raise ValueError(f"depth operation must be 0, 1 or 2, was {operation}")


@dataclass
class Subscription:
    """One market-data request: what it delivers and for which of our instruments."""

    instrument_id: int
    what: str
    """``trades``, ``quotes`` or ``depth``."""
    rows: DepthRows = field(default_factory=DepthRows)


@dataclass
class Scanned:
    """What `MarketData.decode` made of a buffer."""

    consumed: int
    """Bytes of whole frames (the rest is an incomplete frame, kept for the next read)."""
    others: int
    """Frames handed to the Python path."""
    oversized: bool
    """A frame announced more than `MAX_FRAME` bytes: the stream cannot be framed further."""


class MarketData:
    """Decodes market-data messages of the subscribed request ids into staged rows; `take` makes records.

    `decode` frames a whole buffer with the compiled `kernels.scan` (tick-by-tick decoded there)
    and hands every other frame, in order, to a callback; `tick_by_tick` and `depth` are the
    Python path of one message each and raise ValueError/IndexError on a malformed one (nothing
    is staged for it). A message for an unknown request id (cancelled, or not ours) is counted
    in `unknown_request`. Records come out of `take` in the order their messages arrived.
    """

    def __init__(self) -> None:
        self.subs: dict[int, Subscription] = {}
        self._rows: list[tuple] = []
        self._scanned: list[np.ndarray] = []
        self._order = 0
        """Arrival number of the message being decoded (orders the records of both paths)."""
        self._order_base = 0
        """Arrival number of the first frame of the current kernel call."""
        self._cols = kernels.columns(_SCAN_FRAMES)
        self.unknown_request = 0

    def decode(self, data: bytes | bytearray, other) -> Scanned:
        """Frame `data`; decode tick-by-tick messages; call ``other(fields)`` for every other frame."""
        buf = np.frombuffer(data, np.uint8)
        buf.flags.writeable = False  # one kernel signature for bytes and bytearray (the one warm_up compiles)
        consumed, others = 0, 0
        k, st, ln, rq, tt, ts, p1, p2, s1, s2 = self._cols
        while True:
            frames, used, oversized = kernels.scan(buf[consumed:], MAX_FRAME, k, st, ln, rq, tt, ts, p1, p2, s1, s2,
                                                   kernels.POW10)
            kind, start, length = self._cols[0][:frames], self._cols[1][:frames], self._cols[2][:frames]
            ticks = np.flatnonzero(kind == kernels.TICK)
            if len(ticks):
                self._stage_ticks(ticks)
            for i in np.flatnonzero(kind == kernels.OTHER).tolist():
                self._order = self._order_base + i
                a = consumed + int(start[i])
                body = bytes(data[a : a + int(length[i])])
                other((body[:-1] if body.endswith(b"\0") else body).split(b"\0") if body else [])
                others += 1
            self._order_base += frames
            consumed += used
            if oversized or frames < _SCAN_FRAMES:
                return Scanned(consumed, others, oversized)

    def _stage_ticks(self, ticks: np.ndarray) -> None:
        _, _, _, req, tick_type, ts, p1, p2, s1, s2 = self._cols
        keys = np.array(sorted(self.subs), np.int64)
        iids = np.array([self.subs[k].instrument_id for k in keys.tolist()], np.uint32)
        r = req[ticks]
        at = np.searchsorted(keys, r) if len(keys) else np.zeros(len(r), np.int64)
        known = (at < len(keys)) & (keys[np.minimum(at, max(len(keys) - 1, 0))] == r) if len(keys) else at < 0
        self.unknown_request += int(len(r) - np.count_nonzero(known))
        ticks, at = ticks[known], at[known]
        st = np.zeros(len(ticks), _STAGE)
        st["order"] = self._order_base + ticks
        st["ts"] = ts[ticks] * _SECOND
        st["px"], st["px2"], st["sz"], st["sz2"] = p1[ticks], p2[ticks], s1[ticks], s2[ticks]
        st["iid"] = iids[at]
        st["kind"] = np.where(tick_type[ticks] == 3, _QUOTE, _TRADE)
        st["side"] = _NONE
        st["flags"] = _LAST
        self._scanned.append(st)

    def tick_by_tick(self, f: list[bytes]) -> None:
        sub = self.subs.get(integer(f[1]))
        if sub is None:
            self.unknown_request += 1
            return
        kind = f[2]
        ts = _seconds(f[3])
        if kind == b"1" or kind == b"2":
            price, size = number(f[4]), number(f[5])
            integer(f[6])  # the attribute mask must be a number
            self._rows.append((self._order, ts, price, 0.0, size, 0.0, sub.instrument_id, _TRADE, _NONE, _LAST))
        elif kind == b"3":
            bid, ask, bid_size, ask_size = number(f[4]), number(f[5]), number(f[6]), number(f[7])
            integer(f[8])
            self._rows.append((self._order, ts, bid, ask, bid_size, ask_size, sub.instrument_id, _QUOTE, _NONE, _LAST))
        elif kind != b"4":
            raise ValueError(f"unknown tick-by-tick type {kind!r}")

    def depth(self, f: list[bytes], now: int) -> None:
        """updateMktDepth (12) or, with a market maker and smart flag, updateMktDepthL2 (13)."""
        sub = self.subs.get(integer(f[2]))
        if sub is None:
            self.unknown_request += 1
            return
        at = 5 if f[0] == b"13" else 4  # L2 has the market maker before the operation
        book_side = integer(f[at + 1])
        changes = sub.rows.apply(integer(f[3]), integer(f[at]), book_side, number(f[at + 2]), number(f[at + 3]))
        side = _BID if book_side == 1 else _ASK
        iid = sub.instrument_id
        for price, size in changes:
            self._rows.append((self._order, now, price, 0.0, size, 0.0, iid, _BOOK, side, 0))

    def take(self, ts_recv: int) -> np.ndarray:
        """The records staged since the last call, in arrival order, stamped `ts_recv`."""
        rows, self._rows = self._rows, []
        parts, self._scanned = self._scanned, []
        if rows:
            parts.append(np.array(rows, dtype=_STAGE))
        if not parts:
            return np.zeros(0, RECORD_DTYPE)
        st = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(parts) > 1:
            st = st[np.argsort(st["order"], kind="stable")]
        out = np.zeros(len(st), RECORD_DTYPE)
        out["ts_event"] = st["ts"]
        out["ts_recv"] = ts_recv
        out["price"] = float_to_price(st["px"])
        out["size"] = st["sz"]
        out["instrument_id"] = st["iid"]
        out["kind"] = st["kind"]
        out["side"] = st["side"]
        out["flags"] = st["flags"]
        book = np.flatnonzero(st["kind"] == _BOOK)
        if len(book):  # the book is whole after the last row change of each instrument in the batch
            _, last_from_end = np.unique(st["iid"][book][::-1], return_index=True)
            out["flags"][book[len(book) - 1 - last_from_end]] = _LAST
        quote = st["kind"] == _QUOTE
        if quote.any():
            out["price2"] = np.where(quote, float_to_price(st["px2"]), 0)
            out["size2"] = st["sz2"]
            # IB marks an empty side with a price of 0 (or -1) and size 0
            out["price"] = np.where(quote & (st["px"] <= 0) & (st["sz"] == 0), UNDEF_PRICE, out["price"])
            out["price2"] = np.where(quote & (st["px2"] <= 0) & (st["sz2"] == 0), UNDEF_PRICE, out["price2"])
        return out
