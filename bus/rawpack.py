"""Vectorized MessagePack encoding of raw quote batches.

Raw ``quote`` topics carry every tick, so building one msgspec Struct per tick
caps a worker at about a million ticks per second. Within one (publisher, symbol) group
every map has the same keys and the same constant strings (``src``, ``symbol``), so the
whole array is one fixed-layout row repeated: this module writes it as a numpy structured
array with big-endian fields and the constant bytes in between, and turns it into bytes
in one call.

The output is ordinary MessagePack that any stock decoder reads and that decodes to the
same values as `streamctl.bus.wire.Quote` encoded by msgspec. Raw trades take the same layout,
written by compiled code (`native_trades`). Integers are
written as int64 (``0xd3``) and floats as float64 (``0xcb``) whatever their magnitude,
which the MessagePack spec allows (it only *recommends* the shortest form).
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamctl.shm.records import PRICE_SCALE, UNDEF_PRICE

__all__ = ["pack_quotes", "quote_layout", "array_header"]

_enc = msgspec.msgpack.encode

_INT64 = b"\xd3"
_FLOAT64 = b"\xcb"
_NIL = 0xC0

def array_header(n: int) -> bytes:
    """MessagePack header of an array of `n` elements."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class _Layout:
    """One fixed row layout: constant byte runs and typed value fields, in order."""

    def __init__(self, parts: list[tuple[str, bytes | str]]):
        fields: list[tuple[str, str]] = []
        self.constants: dict[str, bytes] = {}
        pending = b""
        for i, (name, spec) in enumerate(parts):
            if isinstance(spec, bytes):
                pending += spec
                continue
            if pending:
                key = f"_c{i}"
                fields.append((key, f"V{len(pending)}"))
                self.constants[key] = pending
                pending = b""
            fields.append((name, spec))
        if pending:
            fields.append(("_cend", f"V{len(pending)}"))
            self.constants["_cend"] = pending
        self.dtype = np.dtype(fields)  # packed: no alignment padding
        template = np.zeros(1, dtype=self.dtype)
        for key, value in self.constants.items():
            template[key] = np.void(value)
        self._row = template.view(np.uint8)
        self._buf = np.empty(0, dtype=self.dtype)

    def rows(self, n: int) -> np.ndarray:
        """`n` rows with the constant bytes in place (a reused buffer: copy out before reuse).

        Filling constants is the slow part, so it happens only when the buffer grows.
        """
        if len(self._buf) < n:
            size = max(n, 2 * len(self._buf), 64)
            self._buf = np.tile(self._row, size).view(self.dtype)
        return self._buf[:n]


def _key(name: str) -> bytes:
    return _enc(name)


def _head(map_header: bytes, src: str, symbol: str) -> list[tuple[str, bytes | str]]:
    """The fields every Quote (and Trade) map starts with: seq, src, symbol, ts_event, ts_recv."""
    return [
        ("", map_header + _key("seq") + _INT64),
        ("seq", ">i8"),
        ("", _key("src") + _enc(src) + _key("symbol") + _enc(symbol) + _key("ts_event") + _INT64),
        ("ts_event", ">i8"),
        ("", _key("ts_recv") + _INT64),
        ("ts_recv", ">i8"),
    ]


def quote_layout(src: str, symbol: str) -> _Layout:
    """Row layout of one ``Quote`` map (9 fields); ``bid``/``ask`` carry a tag byte so nil fits."""
    return _Layout(
        _head(b"\x89", src, symbol) + [
            ("", _key("bid")),
            ("bid_tag", "u1"),
            ("bid", ">f8"),
            ("", _key("ask")),
            ("ask_tag", "u1"),
            ("ask", ">f8"),
            ("", _key("bid_size") + _FLOAT64),
            ("bid_size", ">f8"),
            ("", _key("ask_size") + _FLOAT64),
            ("ask_size", ">f8"),
        ]
    )


def _rows(layout: _Layout, records: np.ndarray, first_seq: int) -> np.ndarray:
    """Rows for `records` with the `_head` fields filled in (seq numbered from `first_seq`)."""
    n = len(records)
    rows = layout.rows(n)
    rows["seq"] = np.arange(first_seq, first_seq + n, dtype=np.int64)
    rows["ts_event"] = records["ts_event"]
    rows["ts_recv"] = records["ts_recv"]
    return rows


def pack_quotes(layout: _Layout, records: np.ndarray, first_seq: int) -> bytes:
    """A MessagePack array of Quote maps; an `UNDEF_PRICE` side is encoded as nil."""
    n = len(records)
    rows = _rows(layout, records, first_seq)
    bid = records["price"]
    ask = records["price2"]
    rows["bid"] = bid / PRICE_SCALE
    rows["ask"] = ask / PRICE_SCALE
    rows["bid_size"] = records["size"]
    rows["ask_size"] = records["size2"]
    no_bid = bid == UNDEF_PRICE
    no_ask = ask == UNDEF_PRICE
    rows["bid_tag"] = np.where(no_bid, _NIL, 0xCB)
    rows["ask_tag"] = np.where(no_ask, _NIL, 0xCB)
    body = rows.view(np.uint8).reshape(n, layout.dtype.itemsize)
    if no_bid.any() or no_ask.any():
        # Drop the 8 value bytes after each nil tag; row-major boolean indexing keeps order.
        keep = np.ones(body.shape, dtype=bool)
        fields = layout.dtype.fields
        assert fields is not None  # a structured dtype
        bid_at, ask_at = fields["bid"][1], fields["ask"][1]
        keep[no_bid, bid_at : bid_at + 8] = False
        keep[no_ask, ask_at : ask_at + 8] = False
        return array_header(n) + body[keep].tobytes()
    return array_header(n) + body.tobytes()
