"""Raw ``trade.SYMBOL`` messages of a batch written by one compiled call.

At live rates a worker's batches hold one to a few dozen trades. Building a msgspec `wire.Trade`
per trade and a list per symbol cost a worker about a third of its time per batch, and the
vectorized numpy packer costs ~100 us on a batch of 50. Here one compiled call groups a batch's
trades by symbol, numbers them from the topics' sequence array (muting those a restart must not
send again), and writes each group's topic frame and MessagePack array straight into the
publisher's `Outbox`, in one of the two encodings the wire has always carried:

- small batches (`Publisher`'s ``_SMALL_BATCH``): exactly ``msgspec.msgpack.encode`` of the list
  of `wire.Trade` Structs with ``seq`` and ``src`` set, groups in order of first appearance:
  integers in their shortest form, floats as float64 (``0xcb``), ``price`` the fixed-point integer
  divided by `PRICE_SCALE` (for magnitudes up to 2**53, where Python's int division and the float
  one agree: a batch with a larger price is left to the Struct path);
- larger ones (``fixed``): `rawpack`'s layout, integers always int64 (``0xd3``), groups by symbol index.

``tests/test_native_trades.py`` proves both byte for byte for random values. Every numba function
the kernel calls is defined in this module (numba's on-disk cache only notices changes to the
kernel's own file).
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
_NO_FLOORS = np.zeros(0, dtype=np.int64)
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


@numba.njit(cache=True, inline="always")
def _put_value(out, at, value, fixed):
    """An integer: int64 (``0xd3``) when `fixed`, else msgspec's shortest form."""
    if fixed:
        out[at] = 0xD3
        return _put_be(out, at + 1, value, 8)
    return _put_int(out, at, value)


@numba.njit(cache=True)
def _pack(records, sym_idx, trade_kind, scale, fixed, rows, group_of_row, table, table_ends, consts, const_ends,
          letters, seqs, floors, count0, muted_until, out, part_ends, size, parts, result):
    """Write every group of `records`' trades as two parts (frame, array payload) into `out` from
    byte `size` and `part_ends` from part `parts`; number them from ``seqs[row]``.

    ``rows[sym_idx[i]]``: the topic row of record ``i`` (-1 none, -2 unknown); row ``r``'s frame is
    table item ``2r``, its constant run from ``src`` to the ``ts_event`` key item ``2r + 1``.
    `group_of_row`: scratch, -1 everywhere (and so left). Groups go in order of first appearance,
    or with `fixed` (`rawpack`'s layout: int64 integers) by symbol index. The ``k``-th group is
    numbered but not written (muted) if its last seq is not past ``floors[row]`` (when `floors` is
    not empty) or ``count0 + k < muted_until``.
    ``result``: bytes and parts used, messages (groups), trades skipped (no topic), muted
    messages; nothing is written (messages -2) if a row is unknown, or (-1, unless `fixed`) if a
    price is beyond exact float conversion.
    """
    n = len(records)
    group_rows = np.empty(n, dtype=np.int64)
    group_index = np.empty(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    following = np.full(n, -1, dtype=np.int64)  # per record, the next record of its group
    firsts = np.empty(n, dtype=np.int64)
    groups = 0
    skipped = 0
    status = 0
    for i in range(n):
        record = records[i]
        if record.kind != trade_kind:
            continue
        if not fixed and (record.price > _EXACT or record.price < -_EXACT):
            status = -1
            break
        index = sym_idx[i]
        row = rows[index] if 0 <= index < len(rows) else -1
        if row == -2:
            status = -2
            break
        if row < 0:
            skipped += 1
            continue
        g = group_of_row[row]
        if g < 0:
            g = group_of_row[row] = groups
            group_rows[g] = row
            group_index[g] = index
            firsts[g] = i
            groups += 1
        else:
            following[last[g]] = i
        last[g] = i
        counts[g] += 1
    for g in range(groups):
        group_of_row[group_rows[g]] = -1
    if status < 0:
        result[2] = status
        return
    order = np.argsort(group_index[:groups]) if fixed else np.arange(groups)
    fbits = np.empty(1, dtype=np.float64)
    ibits = fbits.view(np.int64)
    at = size
    muted = 0
    for k in range(groups):
        g = order[k]
        row = group_rows[g]
        m = counts[g]
        seq = seqs[row]
        seqs[row] = seq + m
        if count0 + k < muted_until or (len(floors) > 0 and seq + m <= floors[row]):
            muted += 1
            continue
        at = _put_bytes(out, at, table, table_ends[2 * row], table_ends[2 * row + 1])
        part_ends[parts] = at
        if m < 16:
            out[at] = 0x90 | m
            at += 1
        elif m < 65536:
            out[at] = 0xDC
            at = _put_be(out, at + 1, m, 2)
        else:
            out[at] = 0xDD
            at = _put_be(out, at + 1, m, 4)
        i = firsts[g]
        while i >= 0:
            record = records[i]
            seq += 1
            at = _put_bytes(out, at, consts, const_ends[0], const_ends[1])
            at = _put_value(out, at, seq, fixed)
            at = _put_bytes(out, at, table, table_ends[2 * row + 1], table_ends[2 * row + 2])
            at = _put_value(out, at, record.ts_event, fixed)
            at = _put_bytes(out, at, consts, const_ends[1], const_ends[2])
            at = _put_value(out, at, record.ts_recv, fixed)
            at = _put_bytes(out, at, consts, const_ends[2], const_ends[3])
            fbits[0] = record.price / scale
            at = _put_be(out, at, ibits[0], 8)
            at = _put_bytes(out, at, consts, const_ends[3], const_ends[4])
            fbits[0] = record.size
            at = _put_be(out, at, ibits[0], 8)
            at = _put_bytes(out, at, consts, const_ends[4], const_ends[5])
            out[at] = letters[record.side]
            at += 1
            i = following[i]
        part_ends[parts + 1] = at
        parts += 2
    result[0] = at
    result[1] = parts
    result[2] = groups
    result[3] = skipped
    result[4] = muted


class TradeTopics:
    """The raw trade topics of one publisher: per row (a symbol), its topic frame, the constant
    bytes of its maps, and in ``seqs`` its last sequence number (the one place it is kept)."""

    def __init__(self, src: str):
        self._src_bytes = _enc("src") + _enc(src) + _enc("symbol")
        self.texts: list[str] = []
        """Per row, the topic."""
        self._items: list[bytes] = []
        self.seqs = np.zeros(16, dtype=np.int64)
        self._group_of_row = np.full(16, -1, dtype=np.int64)
        self._table = np.zeros(0, dtype=np.uint8)
        self._table_ends = np.zeros(1, dtype=np.int64)
        self._longest = 0
        self._consts = np.frombuffer(bytearray(b"".join(_CONSTANTS)), dtype=np.uint8)
        self._const_ends = np.cumsum([0, *map(len, _CONSTANTS)]).astype(np.int64)
        self._result = np.zeros(5, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, symbol: str) -> int:
        """A row for topic `text` (``trade.SYMBOL``); returns its index."""
        row = len(self)
        self._items += [wire.topic_frame(text), self._src_bytes + _enc(symbol) + _enc("ts_event")]
        self._table = np.frombuffer(bytearray(b"".join(self._items)), dtype=np.uint8)
        self._table_ends = np.cumsum([0, *map(len, self._items)]).astype(np.int64)
        self._longest = max(self._longest, len(self._items[-2]) + len(self._items[-1]))
        if row == len(self.seqs):
            self.seqs = np.concatenate([self.seqs, np.zeros(row, dtype=np.int64)])
            self._group_of_row = np.full(2 * row, -1, dtype=np.int64)
        self.texts.append(text)
        return row

    def pack(self, records: np.ndarray, sym_idx: np.ndarray, rows: np.ndarray, outbox: Outbox, *,
             fixed: bool = False, floors: np.ndarray | None = None, count0: int = 0, muted_until: int = 0
             ) -> tuple[int, int, int]:
        """Put the trades of `records` in `outbox`, one message per row, numbered on.

        ``rows[sym_idx[i]]`` is the row of record ``i``: -1 (or an index out of `rows`, or a
        negative one) skips it, -2 means not known yet. `fixed`: `rawpack`'s layout for large
        batches (int64 integers, groups by symbol index), else msgspec's bytes. A message is
        numbered but not written (muted) if its last seq is not past ``floors[row]`` (`floors`
        given), or if it is the ``k``-th of the call and ``count0 + k < muted_until``.

        Returns (messages, trades skipped, messages muted); nothing is written, and messages is
        -2 if a row was not known, -1 if a price is beyond 2**53 and not `fixed` (the caller
        builds Structs instead: Python's int division rounds there, not the float one).
        """
        n = len(records)
        longest_map = len(self._consts) + 3 * _INT_BYTES + 2 * 8 + 1 + self._longest
        outbox.reserve(n * (longest_map + 5), 2 * n)
        result = self._result
        _pack(records, sym_idx, _TRADE, _SCALE, fixed, rows, self._group_of_row, self._table, self._table_ends,
              self._consts, self._const_ends, _SIDE_LETTERS, self.seqs, _NO_FLOORS if floors is None else floors, count0, muted_until, outbox.data,
              outbox.ends, outbox.size, outbox.parts, result)
        if result[2] >= 0:
            outbox.size, outbox.parts = int(result[0]), int(result[1])
        return int(result[2]), int(result[3]), int(result[4])


def warm_up() -> None:
    """Compile (or load) the kernel for what a publisher passes (the forkserver calls this)."""
    from streamctl.bus.native_send import Outbox

    topics = TradeTopics("warm-up")
    records = empty(1)
    records["kind"] = Kind.TRADE
    rows = np.array([topics.add("trade.W", "W")])
    for fixed in (False, True):
        topics.pack(records, np.zeros(1, dtype=np.int32), rows, Outbox(), fixed=fixed)
