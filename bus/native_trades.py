"""Raw ``trade.SYMBOL`` messages of a small batch written by one compiled call.

At live rates a worker's batches hold one to a few dozen trades. Building a msgspec `wire.Trade`
per trade and a list per symbol cost a worker about a third of its time per batch; the
vectorized packer (`rawpack`) costs more than that in numpy calls below some 20 records. Here
one compiled call groups a batch's trades by symbol (in order of first appearance, each group
oldest first), numbers them from the topics' sequence array, and writes each group's topic frame
and MessagePack array straight into the publisher's `Outbox`.

The bytes are exactly ``msgspec.msgpack.encode`` of the list of `wire.Trade` Structs with
``seq`` and ``src`` set (``tests/test_native_trades.py`` proves it for random values):
integers in their shortest form, floats as float64 (``0xcb``), ``price`` as the fixed-point
integer divided by `PRICE_SCALE` (for magnitudes up to 2**53, where Python's int division and
the float one agree: a batch with a larger price is left to the Struct path, see `TradeTopics.pack`).
Every numba function the kernel calls is defined in this module (numba's on-disk cache only
notices changes to the kernel's own file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import numba
import numpy as np

from streamctl.bus import wire
from streamctl.shm.records import PRICE_SCALE, Kind, empty

if TYPE_CHECKING:
    from streamctl.bus.native_send import Outbox

__all__ = ["TradeTopics", "warm_up"]

_enc = msgspec.msgpack.encode

if tuple(f for f in wire.Trade.__struct_fields__) != ("seq", "src", "symbol", "ts_event", "ts_recv", "price",
                                                          "size", "side"):
    raise ImportError("wire.Trade's fields changed: native_trades writes them in the old order")

_CONSTANTS = [
    b"\x88" + _enc("seq"),  # before seq
    _enc("ts_recv"),  # before ts_recv
    _enc("price") + b"\xcb",  # before price
    _enc("size") + b"\xcb",  # before size
    _enc("side") + b"\xa1",  # before the side's letter
]
_INT_BYTES = 9
"""The most bytes an integer takes (type byte + 8)."""
_EXACT = 1 << 53
"""Prices (fixed point) up to this magnitude convert to float64 exactly."""
_SCALE = float(PRICE_SCALE)
_TRADE = int(Kind.TRADE)  # a plain int: numba dispatches an IntEnum member on its slow path
_SIDE_LETTERS = np.full(256, ord("N"), dtype=np.uint8)
_SIDE_LETTERS[1] = ord("B")  # Side.BID: buyer-initiated
_SIDE_LETTERS[2] = ord("S")  # Side.ASK: seller-initiated


@numba.njit(cache=True, inline="always")
def _put_bytes(out, at, source, start, end):
    for k in range(end - start):
        out[at + k] = source[start + k]
    return at + end - start


@numba.njit(cache=True, inline="always")
def _put_be(out, at, value, nbytes):
    for k in range(nbytes):
        out[at + k] = (value >> (8 * (nbytes - 1 - k))) & 0xFF
    return at + nbytes


@numba.njit(cache=True)
def _put_int(out, at, value):
    """`value` in msgspec's (shortest) MessagePack form; returns the position after it."""
    if value >= 0:
        if value < 128:
            out[at] = value
            return at + 1
        if value < 256:
            out[at] = 0xCC
            return _put_be(out, at + 1, value, 1)
        if value < 65536:
            out[at] = 0xCD
            return _put_be(out, at + 1, value, 2)
        if value < 4294967296:
            out[at] = 0xCE
            return _put_be(out, at + 1, value, 4)
        out[at] = 0xCF
        return _put_be(out, at + 1, value, 8)
    if value >= -32:
        out[at] = value & 0xFF
        return at + 1
    if value >= -128:
        out[at] = 0xD0
        return _put_be(out, at + 1, value, 1)
    if value >= -32768:
        out[at] = 0xD1
        return _put_be(out, at + 1, value, 2)
    if value >= -2147483648:
        out[at] = 0xD2
        return _put_be(out, at + 1, value, 4)
    out[at] = 0xD3
    return _put_be(out, at + 1, value, 8)


@numba.njit(cache=True)
def _pack(records, sym_idx, trade_kind, scale, rows, table, table_ends, consts, const_ends, letters, seqs,
          out, part_ends, size, parts, result):
    """Write every group of `records`' trades as two parts (frame, array payload) into `out` from
    byte `size` and `part_ends` from part `parts`; number them from ``seqs[row]``.

    ``rows[sym_idx[i]]``: the topic row of record ``i`` (-1 none, -2 unknown); row ``r``'s frame is
    table item ``2r``, its constant run from ``src`` to the ``ts_event`` key item ``2r + 1``.
    ``result``: bytes and parts used, messages written, trades skipped (no topic); nothing is
    written (messages -2) if a row is unknown, or (-1) if a price is beyond exact float conversion.
    """
    n = len(records)
    group_rows = np.empty(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    record_rows = np.full(n, -1, dtype=np.int64)
    groups = 0
    skipped = 0
    for i in range(n):
        record = records[i]
        if record.kind != trade_kind:
            continue
        if record.price > _EXACT or record.price < -_EXACT:
            result[2] = -1
            return
        index = sym_idx[i]
        row = rows[index] if 0 <= index < len(rows) else -1
        if row == -2:
            result[2] = -2
            return
        if row < 0:
            skipped += 1
            continue
        record_rows[i] = row
        g = 0
        while g < groups and group_rows[g] != row:
            g += 1
        if g == groups:
            group_rows[g] = row
            groups += 1
        counts[g] += 1
    fbits = np.empty(1, dtype=np.float64)
    ibits = fbits.view(np.int64)
    at = size
    for g in range(groups):
        row = group_rows[g]
        at = _put_bytes(out, at, table, table_ends[2 * row], table_ends[2 * row + 1])
        part_ends[parts] = at
        m = counts[g]
        if m < 16:
            out[at] = 0x90 | m
            at += 1
        else:
            out[at] = 0xDC
            at = _put_be(out, at + 1, m, 2)
        seq = seqs[row]
        for i in range(n):
            if record_rows[i] != row:
                continue
            record = records[i]
            seq += 1
            at = _put_bytes(out, at, consts, const_ends[0], const_ends[1])
            at = _put_int(out, at, seq)
            at = _put_bytes(out, at, table, table_ends[2 * row + 1], table_ends[2 * row + 2])
            at = _put_int(out, at, record.ts_event)
            at = _put_bytes(out, at, consts, const_ends[1], const_ends[2])
            at = _put_int(out, at, record.ts_recv)
            at = _put_bytes(out, at, consts, const_ends[2], const_ends[3])
            fbits[0] = record.price / scale
            at = _put_be(out, at, ibits[0], 8)
            at = _put_bytes(out, at, consts, const_ends[3], const_ends[4])
            fbits[0] = record.size
            at = _put_be(out, at, ibits[0], 8)
            at = _put_bytes(out, at, consts, const_ends[4], const_ends[5])
            out[at] = letters[record.side]
            at += 1
        seqs[row] = seq
        part_ends[parts + 1] = at
        parts += 2
    result[0] = at
    result[1] = parts
    result[2] = groups
    result[3] = skipped


class TradeTopics:
    """The raw trade topics of one publisher: per row (a symbol), its topic frame, the constant
    bytes of its maps, and in ``seqs`` its last sequence number (the one place it is kept)."""

    def __init__(self, src: str):
        self._src_bytes = _enc("src") + _enc(src) + _enc("symbol")
        self._items: list[bytes] = []
        self.seqs = np.zeros(16, dtype=np.int64)
        self._table = np.zeros(0, dtype=np.uint8)
        self._table_ends = np.zeros(1, dtype=np.int64)
        self._longest = 0
        self._consts = np.frombuffer(bytearray(b"".join(_CONSTANTS)), dtype=np.uint8)
        self._const_ends = np.cumsum([0, *map(len, _CONSTANTS)]).astype(np.int64)
        self._result = np.zeros(4, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._items) // 2

    def add(self, text: str, symbol: str) -> int:
        """A row for topic `text` (``trade.SYMBOL``); returns its index."""
        row = len(self)
        self._items += [wire.topic_frame(text), self._src_bytes + _enc(symbol) + _enc("ts_event")]
        self._table = np.frombuffer(bytearray(b"".join(self._items)), dtype=np.uint8)
        self._table_ends = np.cumsum([0, *map(len, self._items)]).astype(np.int64)
        self._longest = max(self._longest, len(self._items[-2]) + len(self._items[-1]))
        if row == len(self.seqs):
            self.seqs = np.concatenate([self.seqs, np.zeros(row, dtype=np.int64)])
        return row

    def pack(self, records: np.ndarray, sym_idx: np.ndarray, rows: np.ndarray, outbox: Outbox) -> tuple[int, int]:
        """Put the trades of `records` in `outbox`, one message per row, numbered on.

        ``rows[sym_idx[i]]`` is the row of record ``i``: -1 (or an index out of `rows`, or a
        negative one) skips it, -2 means not known yet. Returns (messages, trades skipped); nothing
        is written, and messages is -2 if a row was not known, -1 if a price is beyond 2**53
        (the caller builds Structs instead).
        """
        n = len(records)
        longest_map = len(self._consts) + 3 * _INT_BYTES + 2 * 8 + 1 + self._longest
        outbox.reserve(n * (longest_map + 3), 2 * n)
        result = self._result
        _pack(records, sym_idx, _TRADE, _SCALE, rows, self._table, self._table_ends, self._consts,
              self._const_ends, _SIDE_LETTERS, self.seqs, outbox.data, outbox.ends, outbox.size, outbox.parts, result)
        if result[2] >= 0:
            outbox.size, outbox.parts = int(result[0]), int(result[1])
        return int(result[2]), int(result[3])


def warm_up() -> None:
    """Compile (or load) the kernel for what a publisher passes (the forkserver calls this)."""
    from streamctl.bus.native_send import Outbox

    topics = TradeTopics("warm-up")
    records = empty(1)
    records["kind"] = Kind.TRADE
    topics.pack(records, np.zeros(1, dtype=np.int32), np.array([topics.add("trade.W", "W")]), Outbox())
