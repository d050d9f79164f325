"""Alpaca frames to records: one typed decoder per encoding, built once, outside the hot loop.

`FrameDecoder.decode` takes one WebSocket frame (an array of messages) and returns the records
of its trades, quotes, corrections and cancels (``RECORD_DTYPE``, our instrument ids), the
control messages (success, subscription, error) in order, and what it could not use: messages
that do not decode (``malformed``) and message types the plant does not convert (``skipped``,
by ``T``). A frame that fails the fast typed path is decoded message by message, so one bad
message costs only itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from streamctl.ingest.vendors.alpaca import messages as m
from streamctl.shm.records import RECORD_DTYPE, Kind, Side

__all__ = ["Decoded", "FrameDecoder"]

_SIDES = {"B": Side.BID, "S": Side.ASK}
_SCALE = 1e9


@dataclass
class Decoded:
    records: np.ndarray
    control: list[m.Error | m.Success | m.Subscription] = field(default_factory=list)
    malformed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_problem: str = ""
    """What the first malformed message was, for the one log line."""


class FrameDecoder:
    """Decodes frames of one encoding (``msgpack`` or ``json``) into records.

    `instrument_id` maps an Alpaca symbol to our id (the feed's registry); 0 drops the message
    and counts it as malformed, as the feed loop would.
    """

    def __init__(self, encoding: str, instrument_id: Callable[[str], int]):
        if encoding not in ("msgpack", "json"):
            raise ValueError(f"`encoding` must be msgpack or json, was {encoding!r}")
        lib = msgspec.msgpack if encoding == "msgpack" else msgspec.json
        self._frame = lib.Decoder(list[m.Message])  # type: ignore[valid-type]
        self._raw = lib.Decoder(list[msgspec.Raw])
        self._one = lib.Decoder(m.Message)  # type: ignore[arg-type]
        self._tag = lib.Decoder(m.Tagged)
        self._instrument_id = instrument_id
        self._ids: dict[str, int] = {}

    def decode(self, frame: bytes | str, ts_recv: int) -> Decoded:
        try:
            items: list = self._frame.decode(frame)
            out = Decoded(np.empty(0, RECORD_DTYPE))
        except (msgspec.DecodeError, msgspec.ValidationError):
            out = Decoded(np.empty(0, RECORD_DTYPE))
            items = self._one_by_one(frame, out)
        rows: list[tuple] = []
        for item in items:
            try:
                row = self._row(item, out)
            except ValueError as exc:  # a bad timestamp
                self._bad(out, f"{type(item).__name__} for `{getattr(item, 'S', '?')}`: {exc}")
                continue
            if row is not None:
                rows.append(row)
        if rows:
            records = np.zeros(len(rows), RECORD_DTYPE)
            cols = list(zip(*rows, strict=True))
            for name, col in zip(("ts_event", "price", "price2", "size", "size2", "sequence", "instrument_id", "kind",
                                  "side"), cols, strict=True):
                records[name] = col
            records["ts_recv"] = ts_recv
            keep = records["instrument_id"] != 0
            if not keep.all():
                dropped = int(np.count_nonzero(~keep))
                out.malformed += dropped
                out.first_problem = out.first_problem or f"{dropped} message(s) for symbols no topic can carry"
                records = records[keep]
            out.records = records
        return out

    def _one_by_one(self, frame: bytes | str, out: Decoded) -> list:
        try:
            raws = self._raw.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._bad(out, f"a frame that is not an array of messages: {exc}")
            return []
        items = []
        for raw in raws:
            try:
                items.append(self._one.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                try:
                    tag = self._tag.decode(raw).T
                except (msgspec.DecodeError, msgspec.ValidationError):
                    tag = ""
                if tag and tag not in _KNOWN:
                    out.skipped[tag] = out.skipped.get(tag, 0) + 1
                else:
                    self._bad(out, f"message `{tag or '?'}`: {exc}")
        return items

    def _row(self, item, out: Decoded) -> tuple | None:
        t = type(item)
        if t is m.Trade:
            return (m.timestamp_ns(item.t), round(item.p * _SCALE), 0, item.s, 0.0, item.i, self._id(item.S),
                    Kind.TRADE, _SIDES.get(item.tks, Side.NONE))
        if t is m.Quote:
            return (m.timestamp_ns(item.t), round(item.bp * _SCALE), round(item.ap * _SCALE), item.bs, item.as_, 0,
                    self._id(item.S), Kind.QUOTE, Side.NONE)
        if t is m.Correction:
            # price/size: the corrected trade; price2: its new id; size2: the original size; sequence: the old id
            return (m.timestamp_ns(item.t), round(item.cp * _SCALE), item.ci, item.cs, item.os, item.oi,
                    self._id(item.S), Kind.CORRECTION, Side.NONE)
        if t is m.CancelError:
            return (m.timestamp_ns(item.t), round(item.p * _SCALE), 0, item.s, 0.0, item.i, self._id(item.S),
                    Kind.CANCEL, Side.NONE)
        if t in _CONTROL:
            out.control.append(item)
            return None
        name = item.__struct_config__.tag
        out.skipped[name] = out.skipped.get(name, 0) + 1  # vendor bars: the plant computes its own
        return None

    def _id(self, symbol: str) -> int:
        our = self._ids.get(symbol)
        if our is None:
            our = self._ids[symbol] = self._instrument_id(symbol)
        return our

    @staticmethod
    def _bad(out: Decoded, what: str) -> None:
        out.malformed += 1
        if not out.first_problem:
            out.first_problem = what


_CONTROL = frozenset(m.CONTROL)
_KNOWN = frozenset(cls.__struct_config__.tag for cls in (*m.DATA, *m.CONTROL))
