"""What the local venue serves: the files' trades and quotes (and minute bars made from the
trades) as Alpaca messages, in event-time order, each pre-encoded once per shape and encoding.

Any file ``streamctl replay`` reads (DBN, CSV, Parquet) is served under its own symbols.
Book records (MBO/level updates) have no Alpaca message and are counted in `skipped`.
A message's position in `Stream.items` is what ``--inject WHAT@N`` counts.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from streamctl.ingest.formats.tabular import detect_format, iter_tabular
from streamctl.ingest.vendors.alpaca import messages as m
from streamctl.shm.records import UNDEF_PRICE, Kind, Side

__all__ = ["Item", "Stream", "load_stream", "Shape", "Encoding", "CHANNEL_OF"]

Shape = Literal["stocks", "crypto"]
Encoding = Literal["msgpack", "json"]
CHANNEL_OF = {"t": "trades", "q": "quotes", "b": "bars"}
_MINUTE = 60_000_000_000
_EXCHANGE = "V"  # IEX: the exchange code Alpaca's free feed reports
_TAKER = {Side.BID: "B", Side.ASK: "S"}


@dataclass
class Item:
    """One data message of the stream."""

    ts_event: int
    symbol: str
    tag: str
    """``t``, ``q`` or ``b``."""
    fields: dict
    """The message's fields for the stocks shape (``t`` as ns); `payload` derives the rest."""
    encoded: dict[tuple[Shape, Encoding], bytes] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return CHANNEL_OF[self.tag]


@dataclass
class Stream:
    items: list[Item]
    symbols: list[str]
    skipped: int = 0
    """Records of the files with no Alpaca message (book updates, resets)."""

    def frame(self, items: list[Item], shape: Shape, encoding: Encoding) -> bytes:
        """One WebSocket frame (an array) holding `items`."""
        parts = [encode(item, shape, encoding) for item in items]
        if encoding == "json":
            return b"[" + b",".join(parts) + b"]"
        n = len(parts)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536 else
                                                   b"\xdd" + n.to_bytes(4, "big"))
        return head + b"".join(parts)


_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def encode(item: Item, shape: Shape, encoding: Encoding) -> bytes:
    """The message as Alpaca sends it (encoded once per shape and encoding, then cached)."""
    key = (shape, encoding)
    out = item.encoded.get(key)
    if out is None:
        out = item.encoded[key] = encode_fields(payload(item, shape), encoding)
    return out


def encode_fields(fields: dict, encoding: Encoding) -> bytes:
    """A message map with ``t`` in ns, in Alpaca's encoding of ``t`` (RFC-3339 or Timestamp)."""
    t = fields.get("t")
    if isinstance(t, int):
        fields = {**fields, "t": m.format_rfc3339(t) if encoding == "json" else m.msgpack_timestamp(t)}
    return _json.encode(fields) if encoding == "json" else _msgpack.encode(fields)


def payload(item: Item, shape: Shape) -> dict:
    """The message map of `item` for a stocks (v2) or crypto (v1beta3) stream."""
    f = item.fields
    if item.tag == "b":
        return {"T": "b", "S": item.symbol, **f}
    if shape == "stocks":
        return {"T": item.tag, "S": item.symbol, **{k: v for k, v in f.items() if k != "tks"}}
    if item.tag == "t":
        crypto = {"T": "t", "S": item.symbol, "p": f["p"], "s": f["s"], "t": f["t"], "i": f["i"]}
        return {**crypto, "tks": f["tks"]} if "tks" in f else crypto
    return {"T": "q", "S": item.symbol, "bp": f["bp"], "bs": f["bs"], "ap": f["ap"], "as": f["as"], "t": f["t"]}


def load_stream(paths: list[str]) -> Stream:
    """Every file's trades, quotes and minute bars, merged by event time (files keep their order)."""
    per_file: list[list[Item]] = []
    skipped = 0
    symbols: set[str] = set()
    for path in paths:
        records, names = _read(path)
        items, n_skipped = _items(records, names)
        per_file.append(items)
        skipped += n_skipped
        symbols.update(names[i] for i in np.unique(records["instrument_id"]).tolist() if i in names)
    merged = list(heapq.merge(*per_file, key=lambda it: it.ts_event))
    return Stream(_with_bars(merged), sorted(symbols), skipped)


def _read(path: str) -> tuple[np.ndarray, dict[int, str]]:
    """(records with the file's instrument ids, id -> symbol) of one file; ValueError if unreadable."""
    fmt = detect_format(path)
    if fmt is None:
        raise ValueError(f"`{path}`: unknown extension (use .dbn, .dbn.zst, .csv, .parquet)")
    if fmt == "dbn":
        from streamctl.ingest.formats.dbn import decoder as dbn  # numba: not on `streamctl venue --help`

        decoder = dbn.DbnDecoder(ts_recv="record")
        try:
            decoder.write(dbn.read_file(path))
            batch = decoder.finish()
        except dbn.DbnError as exc:
            raise ValueError(f"`{path}`: {exc}") from None
        assert decoder.metadata is not None
        names = dbn.metadata_symbols(decoder.metadata)
        names.update(batch.mappings)
        for vendor_id in np.unique(batch.records["instrument_id"]).tolist():
            names.setdefault(vendor_id, str(vendor_id))
        return batch.records, names
    chunks: list[np.ndarray] = []
    ids: dict[str, int] = {}
    for chunk in iter_tabular(path, format=fmt):  # each chunk's instrument_id indexes its own symbols
        ours = np.array([ids.setdefault(s, len(ids)) for s in chunk.symbols] or [0], np.uint32)
        chunk.records["instrument_id"] = ours[chunk.records["instrument_id"]]
        chunks.append(chunk.records)
    if not chunks:
        raise ValueError(f"`{path}` holds no rows")
    return np.concatenate(chunks), {i: s for s, i in ids.items()}


def _items(records: np.ndarray, names: dict[int, str]) -> tuple[list[Item], int]:
    items: list[Item] = []
    skipped = 0
    trade_ids: dict[str, int] = {}
    for rec in records.tolist():
        ts_event, _recv, price, price2, size, size2, _seq, iid, kind, side, _flags, _res = rec
        symbol = names[iid]
        if kind == Kind.TRADE:
            trade_ids[symbol] = trade_ids.get(symbol, 0) + 1
            fields = {"i": trade_ids[symbol], "x": _EXCHANGE, "p": price / 1e9, "s": size, "c": ["@"], "z": "C",
                      "t": ts_event}
            if side in _TAKER:
                fields["tks"] = _TAKER[side]  # crypto only (see `payload`)
            items.append(Item(ts_event, symbol, "t", fields))
        elif kind == Kind.QUOTE and price != UNDEF_PRICE and price2 != UNDEF_PRICE:
            fields = {"bx": _EXCHANGE, "bp": price / 1e9, "bs": size, "ax": _EXCHANGE, "ap": price2 / 1e9,
                      "as": size2, "c": ["R"], "z": "C", "t": ts_event}
            items.append(Item(ts_event, symbol, "q", fields))
        else:
            skipped += 1
    return items, skipped


def _with_bars(items: list[Item]) -> list[Item]:
    """`items` with Alpaca's minute bars inserted: a symbol's bar goes out before its first
    trade of a later minute, the last ones at the end of the data."""
    out: list[Item] = []
    open_bars: dict[str, dict] = {}
    for item in items:
        if item.tag == "t":
            minute = item.ts_event - item.ts_event % _MINUTE
            bar = open_bars.get(item.symbol)
            if bar is not None and bar["t"] != minute:
                out.append(_bar_item(item.symbol, open_bars.pop(item.symbol), item.ts_event))
                bar = None
            p, s = item.fields["p"], item.fields["s"]
            if bar is None:
                open_bars[item.symbol] = {"o": p, "h": p, "l": p, "c": p, "v": s, "t": minute, "n": 1, "pv": p * s}
            else:
                bar.update(h=max(bar["h"], p), l=min(bar["l"], p), c=p, v=bar["v"] + s, n=bar["n"] + 1,
                           pv=bar["pv"] + p * s)
        out.append(item)
    end = out[-1].ts_event if out else 0
    for symbol, bar in open_bars.items():
        out.append(_bar_item(symbol, bar, end))
    return out


def _bar_item(symbol: str, bar: dict, ts_sent: int) -> Item:
    pv = bar.pop("pv")
    fields = {**bar, "vw": pv / bar["v"] if bar["v"] else bar["c"]}
    return Item(ts_sent, symbol, "b", fields)
