"""Alpaca frames to records: one typed decoder per encoding, built once, outside the hot loop.

`FrameDecoder.decode` takes one WebSocket frame (an array of messages) and returns the records
of its trades, quotes, corrections and cancels (``RECORD_DTYPE``, our instrument ids), the
control messages (success, subscription, error) in order, and what it could not use: messages
that do not decode (``malformed``) and message types the plant does not convert (``skipped``,
by ``T``). A frame that fails the fast typed path is decoded message by message, so one bad
message costs only itself.
"""

from __future__ import annotations

import re
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
        self._msgpack = encoding == "msgpack"

    def decode(self, frame: bytes | str, ts_recv: int) -> Decoded:
        out = Decoded(np.empty(0, RECORD_DTYPE))
        try:
            items: list = self._frame.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError):
            items = self._one_by_one(frame, out)
        trades: list[m.Trade] = []
        quotes: list[m.Quote] = []
        at_t: list[int] = []
        at_q: list[int] = []
        rest: list[tuple[int, object]] = []  # corrections and cancels: rare, row by row
        n = 0
        for item in items:
            t = type(item)
            if t is m.Trade:
                trades.append(item)
                at_t.append(n)
            elif t is m.Quote:
                quotes.append(item)
                at_q.append(n)
            elif t is m.Correction or t is m.CancelError:
                rest.append((n, item))
            elif t in _CONTROL:
                out.control.append(item)
                continue
            else:
                tag = item.__struct_config__.tag  # vendor bars: the plant computes its own
                out.skipped[tag] = out.skipped.get(tag, 0) + 1
                continue
            n += 1
        if not n:
            return out
        records = np.zeros(n, RECORD_DTYPE)
        good = np.ones(n, bool)
        if trades:
            self._trades(records, good, np.array(at_t), trades, out)
        if quotes:
            self._quotes(records, good, np.array(at_q), quotes, out)
        for row, item in rest:
            try:
                records[row] = (*self._void(item), 0, 0)
            except ValueError as exc:  # a bad timestamp
                good[row] = False
                self._bad(out, f"{type(item).__name__} for `{item.S}`: {exc}")  # type: ignore[attr-defined]
        records["ts_recv"] = ts_recv
        unmapped = good & (records["instrument_id"] == 0)
        n_unmapped = int(np.count_nonzero(unmapped))
        if n_unmapped:
            out.malformed += n_unmapped
            out.first_problem = out.first_problem or f"{n_unmapped} message(s) for symbols no topic can carry"
            good &= ~unmapped
        if not good.all():
            records = records[good]
        out.records = records
        return out

    def _trades(self, records: np.ndarray, good: np.ndarray, at: np.ndarray, trades: list, out: Decoded) -> None:
        view = records[at] if len(at) != len(records) else records
        view["ts_event"] = self._times([x.t for x in trades], good, at, trades, out)
        view["price"] = np.rint(np.array([x.p for x in trades], np.float64) * _SCALE)
        view["size"] = [x.s for x in trades]
        view["sequence"] = [x.i for x in trades]
        view["instrument_id"] = self._symbol_ids([x.S for x in trades])
        view["kind"] = Kind.TRADE
        takers = [x.tks for x in trades]
        if any(takers):  # crypto: the taker's side
            view["side"] = [_SIDES.get(t, Side.NONE) for t in takers]
        if view is not records:
            records[at] = view

    def _quotes(self, records: np.ndarray, good: np.ndarray, at: np.ndarray, quotes: list, out: Decoded) -> None:
        view = records[at] if len(at) != len(records) else records
        view["ts_event"] = self._times([x.t for x in quotes], good, at, quotes, out)
        view["price"] = np.rint(np.array([x.bp for x in quotes], np.float64) * _SCALE)
        view["price2"] = np.rint(np.array([x.ap for x in quotes], np.float64) * _SCALE)
        view["size"] = [x.bs for x in quotes]
        view["size2"] = [x.as_ for x in quotes]
        view["instrument_id"] = self._symbol_ids([x.S for x in quotes])
        view["kind"] = Kind.QUOTE
        if view is not records:
            records[at] = view

    def _times(self, raws: list[msgspec.Raw], good: np.ndarray, at: np.ndarray, items: list, out: Decoded) -> np.ndarray:
        """Event times of `raws`, vectorized for the usual shapes; a bad one marks its row not good.

        The fast paths take only what they convert exactly (numpy wraps a time past 2262 into a
        plausible one, and reads ``2021Z`` as a year); anything else goes through `timestamp_ns`."""
        if self._msgpack:
            joined = b"".join(raws)
            if len(joined) == 15 * len(raws):  # all 96-bit Timestamps (ext -1, 12 bytes)
                stamps = np.frombuffer(joined, _TS96)
                if ((stamps["head"] == _TS96_HEAD).all() and (stamps["nsec"] < 1_000_000_000).all()
                        and (np.abs(stamps["sec"]) < _TS96_MAX_SEC).all()):
                    return stamps["sec"].astype(np.int64) * 1_000_000_000 + stamps["nsec"].astype(np.int64)
        else:
            text = [bytes(r)[1:-2].decode("ascii", "replace") if bytes(r)[-2:] == b'Z"' else "" for r in raws]
            if all(_ZULU.fullmatch(t) for t in text):
                try:
                    return np.array(text, "datetime64[ns]").view(np.int64)
                except ValueError:  # a field out of range: said message by message below
                    pass
        times = np.zeros(len(raws), np.int64)
        for j, raw in enumerate(raws):
            try:
                times[j] = m.timestamp_ns(raw)
            except ValueError as exc:
                good[at[j]] = False
                self._bad(out, f"{type(items[j]).__name__} for `{items[j].S}`: {exc}")
        return times

    def _symbol_ids(self, symbols: list[str]) -> list[int]:
        ids = self._ids
        return [ids[s] if s in ids else self._id(s) for s in symbols]

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

    def _void(self, item) -> tuple:
        """The record fields (up to `side`) of a correction or a cancel."""
        if type(item) is m.Correction:
            # price/size: the corrected trade; price2: its new id; size2: the original size; sequence: the old id
            return (m.timestamp_ns(item.t), 0, round(item.cp * _SCALE), item.ci, item.cs, item.os, item.oi,
                    self._id(item.S), Kind.CORRECTION, Side.NONE)
        return (m.timestamp_ns(item.t), 0, round(item.p * _SCALE), 0, item.s, 0.0, item.i, self._id(item.S),
                Kind.CANCEL, Side.NONE)

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
_TS96 = np.dtype([("head", "S3"), ("nsec", ">u4"), ("sec", ">i8")])
_TS96_HEAD = b"\xc7\x0c\xff"
_TS96_MAX_SEC = 9_223_372_035
"""Seconds whose nanoseconds int64 holds, with room for the fraction."""
_ZULU = re.compile(r"(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?")
"""The shape numpy converts exactly: UTC, years 1900..2199 (datetime64[ns] wraps outside 1678..2262)."""
_KNOWN = frozenset(cls.__struct_config__.tag for cls in (*m.DATA, *m.CONTROL))
