"""One MDP 3.0 channel's market state: decoded incremental packets in, our records out.

Book updates are applied as they come but published only at ``EndOfEvent`` (bit 7 of
MatchEventIndicator), so a subscriber never sees half an event; ``Flag.LAST`` marks each
instrument's last record of the event. ``RptSeq`` is tracked per instrument across every
template that carries it: an entry at or below the instrument's last RptSeq was already
applied (a snapshot covered it) and is skipped; one past the next is an instrument gap.
A ChannelReset4 clears every book of the channel. Snapshots (SnapshotFullRefresh52) rebuild
a book and set its RptSeq.

Order updates (47, and the order entries of 46 which take price, side and instrument from the
MD entry their ``ReferenceID`` names) keep every resting order (`OrderBook`). They carry no
RptSeq: an instrument's orders rebuilt from SnapshotFullRefreshOrderBook53 skip the updates of
packets up to its ``LastMsgSeqNumProcessed``. With ``mbo`` the published book comes from the
orders, otherwise from the MBP levels; only that one is kept (the other is not rebuilt after a
gap), unless ``keep_both`` (the venue, which snapshots both and never has gaps). The
fills of 48's order entries change nothing, the order updates that follow them do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamctl.ingest.vendors.cme.book import DELETE, ENTRY_SIDES, LevelBook
from streamctl.ingest.vendors.cme.decoder import Decoded
from streamctl.ingest.vendors.cme.orders import OrderBook
from streamctl.ingest.vendors.cme.schema import Schema, Template
from streamctl.shm.records import RECORD_DTYPE, Flag, Kind, Side

__all__ = ["Channel", "price9", "BOOK_TEMPLATES", "TRADE_TEMPLATES"]

END_OF_EVENT = 0x80
BOOK_TEMPLATES = (32, 46)
"""MDIncrementalRefreshBook (legacy 32, current 46)."""
TRADE_TEMPLATES = (42, 48)
"""MDIncrementalRefreshTradeSummary (legacy 42, current 48)."""
ORDER_TEMPLATE = 47
"""MDIncrementalRefreshOrderBook."""
_ORDER_SIDES = {b"0": Side.BID, b"1": Side.ASK}
_AGGRESSOR = {1: Side.BID, 2: Side.ASK}
_ENTRY_FIELDS = ("SecurityID", "RptSeq", "MDEntryPx", "MDEntrySize", "MDPriceLevel", "MDUpdateAction", "MDEntryType",
                 "AggressorSide")
_ORDER_FIELDS = ("OrderID", "MDEntryPx", "MDDisplayQty", "SecurityID", "MDUpdateAction", "MDEntryType", "ReferenceID",
                 "OrderUpdateAction")
_INT32_NULL, _PRICE_NULL, _UINT8_NULL = 2**31 - 1, 2**63 - 1, 255
_ROW = np.dtype([("ts_event", "<i8"), ("price", "<i8"), ("size", "<f8"), ("sequence", "<u8"),
                 ("instrument_id", "<u4"), ("kind", "u1"), ("side", "u1"), ("flags", "u1")])
"""The record fields a row tuple carries, in tuple order."""


def _px_exponent(template: Template) -> int | None:
    for group in template.groups:
        for f in group.fields:
            if f.name == "MDEntryPx":
                return f.exponent
    return None


def price9(mantissa: int, exponent: int | None) -> int:
    """A schema price mantissa in our 1e-9 fixed point."""
    return int(mantissa) * 10 ** (9 + (exponent if exponent is not None else -9))


class Channel:
    """Books, RptSeq and symbols of one channel; `apply` consumes packets in MsgSeqNum order."""

    def __init__(self, schema: Schema, instrument_of: Callable[[int], int], *, depth: int = 10, merge_implied: bool = False,
                 mbo: bool = False, keep_both: bool = False, on_instrument_gap: Callable[[int, int, int], None] = lambda sid, want, got: None):
        self._instrument_of = instrument_of
        self.exponent = {tid: _px_exponent(t) for tid, t in schema.templates.items()}
        """Per template: the exponent of its entries' MDEntryPx (-7 legacy, -9 current)."""
        """SecurityID -> our instrument id (0: not subscribed)."""
        self._depth = depth
        self._merge = merge_implied
        self._on_gap = on_instrument_gap
        self.books: dict[int, LevelBook] = {}
        self.rpt_seq: dict[int, int] = {}
        """Per SecurityID: the last RptSeq applied from the incremental feed (trades count from it)."""
        self.book_rpt_seq: dict[int, int] = {}
        """Per SecurityID: the last RptSeq the book reflects (a snapshot's, after a rebuild)."""
        self._resynced: set[int] = set()
        """Rebuilt instruments whose next entry may jump RptSeq (lost packets, not a new gap)."""
        self.mbo = mbo
        """Publish the book from the orders (MBO) instead of the MBP levels."""
        self._keep_mbp, self._keep_mbo = keep_both or not mbo, keep_both or mbo
        self.orders = OrderBook()
        self.order_seq: dict[int, int] = {}
        """Per SecurityID: the packet MsgSeqNum its orders were rebuilt at (updates up to it are skipped)."""
        self.rejected = 0
        """Book entries and order updates that did not fit the state (a level past its end, an unknown order)."""
        self._rows: list[tuple] = []
        self._event: list[tuple] = []

    def book(self, sid: int) -> LevelBook:
        if sid not in self.books:
            self.books[sid] = LevelBook(self._depth, merge_implied=self._merge)
        return self.books[sid]

    # ---- incrementals
    def apply(self, dec: Decoded, packets: np.ndarray) -> None:
        """Apply the messages of packets `packets` (indices into `dec`, in MsgSeqNum order).

        Columns are turned into Python lists once per template, so the per-entry loop (the book
        is a state machine) reads no numpy scalars."""
        keep = np.isin(dec.msg_pkt, packets)
        order = np.argsort(np.searchsorted(packets, dec.msg_pkt[keep]), kind="stable")
        msgs = np.flatnonzero(keep)[order]
        ts = dec.sending_time[dec.msg_pkt].astype(np.int64)
        mei = np.zeros(len(dec.msg_tid), np.int64)
        entries: dict[int, tuple[np.ndarray, dict[str, list]]] = {}
        orders: dict[int, tuple[np.ndarray, dict[str, list]]] = {}
        for tid in set(dec.msg_tid[msgs].tolist()):
            if tid not in dec.schema.templates:
                continue
            idx, roots = dec.root(tid)
            names = roots.dtype.names or ()
            if "TransactTime" in names:
                ts[idx] = roots["TransactTime"].astype(np.int64)
            if "MatchEventIndicator" in names:
                mei[idx] = roots["MatchEventIndicator"]
            if any(g.name == "NoMDEntries" for g in dec.schema.template(tid).groups):
                ent_msg, rows = dec.group(tid, "NoMDEntries")
                cols = {n: rows[n].tolist() for n in _ENTRY_FIELDS if n in (rows.dtype.names or ())}
                if "SecurityID" in cols and "RptSeq" in cols:
                    entries[tid] = (np.searchsorted(ent_msg, np.arange(len(dec.msg_tid) + 1)), cols)
            order_group = {ORDER_TEMPLATE: "NoMDEntries", **dict.fromkeys(BOOK_TEMPLATES, "NoOrderIDEntries")}.get(tid)
            if self._keep_mbo and order_group and any(g.name == order_group for g in dec.schema.template(tid).groups):
                ord_msg, rows = dec.group(tid, order_group)
                cols = {n: rows[n].tolist() for n in _ORDER_FIELDS if n in (rows.dtype.names or ())}
                orders[tid] = (np.searchsorted(ord_msg, np.arange(len(dec.msg_tid) + 1)), cols)
        seqs = dec.seq[dec.msg_pkt].tolist()
        tids, ts_list, mei_list = dec.msg_tid.tolist(), ts.tolist(), mei.tolist()
        for m in msgs.tolist():
            tid = tids[m]
            if tid == 4:
                self._reset_all(ts_list[m], seqs[m])
            if tid in entries:
                start, cols = entries[tid]
                self._entries(tid, cols, int(start[m]), int(start[m + 1]), ts_list[m], seqs[m])
            if tid in orders:
                start, cols = orders[tid]
                md = entries[tid] if tid in entries else None
                self._orders(tid, cols, int(start[m]), int(start[m + 1]), md, m, ts_list[m], seqs[m])
            if mei_list[m] & END_OF_EVENT:
                self._end_event()

    def _entries(self, tid: int, cols: dict[str, list], lo: int, hi: int, ts: int, seq: int) -> None:
        px_exp = self.exponent[tid]
        scale = 10 ** (9 + (px_exp if px_exp is not None else -9))
        sids, rpts = cols["SecurityID"], cols["RptSeq"]
        trade, book = tid in TRADE_TEMPLATES, tid in BOOK_TEMPLATES
        for k in range(lo, hi):
            sid, rpt = sids[k], rpts[k]
            last = self.rpt_seq.get(sid)
            if last is not None and rpt <= last:
                continue  # already applied
            if last is not None and rpt != last + 1 and sid not in self._resynced:
                self._on_gap(sid, last + 1, rpt)
            self._resynced.discard(sid)
            self.rpt_seq[sid] = rpt
            covered = rpt <= self.book_rpt_seq.get(sid, 0)  # a snapshot holds its effect on the book
            self.book_rpt_seq[sid] = max(rpt, self.book_rpt_seq.get(sid, 0))
            iid = self._instrument_of(sid)
            if not iid:
                continue
            if trade:
                side = int(_AGGRESSOR.get(cols["AggressorSide"][k], Side.NONE))
                self._event.append((ts, cols["MDEntryPx"][k] * scale, float(cols["MDEntrySize"][k]), seq, iid,
                                    Kind.TRADE, side, 0))
            elif book and not covered and self._keep_mbp:
                kind = ENTRY_SIDES.get(cols["MDEntryType"][k])
                if kind is None:
                    continue
                size = cols["MDEntrySize"][k]
                size = 0 if size == _INT32_NULL else size
                px = cols["MDEntryPx"][k]
                price = 0 if px == _PRICE_NULL else px * scale
                changes = self.book(sid).apply(cols["MDUpdateAction"][k], kind[0], kind[1], cols["MDPriceLevel"][k],
                                               price, size)
                if changes is None:
                    self.rejected += 1
                    continue
                if self.mbo:
                    continue
                for side, p, sz in changes:
                    self._event.append((ts, p, sz, seq, iid, Kind.BOOK, side, 0))

    def _orders(self, tid: int, cols: dict[str, list], lo: int, hi: int,
                md: tuple[np.ndarray, dict[str, list]] | None, m: int, ts: int, seq: int) -> None:
        """Order updates [lo, hi) of message `m`; 46's take price, side and SecurityID from the MD
        entry their ReferenceID names (`md`), 47's carry their own."""
        scale = 10 ** (9 + (e if (e := self.exponent[tid]) is not None else -9))
        for k in range(lo, hi):
            if tid == ORDER_TEMPLATE:
                src, j, action, qty = cols, k, cols["MDUpdateAction"][k], cols["MDDisplayQty"][k]
            else:
                ref = cols["ReferenceID"][k]
                if md is None or ref == _UINT8_NULL or not 1 <= ref <= int(md[0][m + 1] - md[0][m]):
                    self.rejected += 1
                    continue
                src, j, action, qty = md[1], int(md[0][m]) + ref - 1, cols["OrderUpdateAction"][k], cols["MDDisplayQty"][k]
            sid = src["SecurityID"][j]
            if seq <= self.order_seq.get(sid, 0):
                continue  # the instrument's order snapshot holds it
            side = _ORDER_SIDES.get(src["MDEntryType"][j])
            px = src["MDEntryPx"][j]
            if side is None or (px == _PRICE_NULL and action != DELETE):
                self.rejected += 1
                continue
            changes = self.orders.apply(action, cols["OrderID"][k], sid, int(side), 0 if px == _PRICE_NULL else px * scale,
                                        0 if qty == _INT32_NULL else qty)
            if changes is None:
                self.rejected += 1
                continue
            iid = self._instrument_of(sid)
            if iid and self.mbo:
                self._event.extend((ts, p, sz, seq, iid, Kind.BOOK, s, 0) for s, p, sz in changes)

    def _end_event(self) -> None:
        seen: set[int] = set()
        for i in range(len(self._event) - 1, -1, -1):
            row = self._event[i]
            if row[4] not in seen:
                seen.add(row[4])
                self._event[i] = (*row[:7], int(Flag.LAST))
        self._rows.extend(self._event)
        self._event.clear()

    def _reset_all(self, ts: int, seq: int) -> None:
        for sid in self._instruments():
            self.book(sid).clear()
            self.orders.clear(sid)
            iid = self._instrument_of(sid)
            if iid:
                self._event.append((ts, 0, 0.0, seq, iid, Kind.RESET, Side.NONE, int(Flag.LAST)))
        self.rpt_seq.clear()
        self.book_rpt_seq.clear()
        self.order_seq.clear()

    def _instruments(self) -> list[int]:
        """Every SecurityID with a book or an order, in a stable order."""
        return sorted(set(self.books) | {order[0] for order in self.orders.orders.values()})

    # ---- recovery
    def invalidate(self, sids: list[int], ts: int) -> None:
        """Books about to be rebuilt: cleared and published as empty (a RESET), never as valid."""
        self._event.clear()
        for sid in sids:
            self.book(sid).clear()
            self.orders.clear(sid)
            iid = self._instrument_of(sid)
            if iid:
                self._rows.append((ts, 0, 0.0, 0, iid, Kind.RESET, Side.NONE, int(Flag.LAST)))

    def rebuild(self, sid: int, rpt_seq: int, entries: np.ndarray, exponent: int | None, ts: int) -> None:
        """Replace one instrument's book with a snapshot's levels (records flagged SNAPSHOT)."""
        book = self.book(sid)
        book.clear()
        self.book_rpt_seq[sid] = rpt_seq
        self._resynced.add(sid)
        for e in entries:
            kind = ENTRY_SIDES.get(bytes(e["MDEntryType"]))
            level = int(e["MDPriceLevel"])
            if kind is None or level == 127 or int(e["MDEntryPx"]) == 2**63 - 1:
                continue
            levels = book.levels[kind]
            if level - 1 == len(levels) < book.depth:
                levels.append([price9(e["MDEntryPx"], exponent), int(e["MDEntrySize"])])
        iid = self._instrument_of(sid)
        if iid and not self.mbo:
            rows: list[tuple] = [(ts, 0, 0.0, 0, iid, Kind.RESET, Side.NONE, int(Flag.SNAPSHOT))]
            rows += [(ts, p, s, 0, iid, Kind.BOOK, side, int(Flag.SNAPSHOT)) for side, p, s in book.published()]
            rows[-1] = (*rows[-1][:7], int(Flag.SNAPSHOT | Flag.LAST))
            self._rows.extend(rows)

    def rebuild_orders(self, sid: int, last_seq: int, entries: np.ndarray, ts: int) -> None:
        """Replace one instrument's orders with a SnapshotFullRefreshOrderBook53's (all its chunks);
        order updates of packets up to `last_seq` are then skipped."""
        self.orders.clear(sid)
        self.order_seq[sid] = last_seq
        self._resynced.add(sid)
        scale = 10 ** (9 + (e if (e := self.exponent.get(53)) is not None else -9))
        for e in entries:
            side = _ORDER_SIDES.get(bytes(e["MDEntryType"]))
            if side is None or self.orders.apply(0, int(e["OrderID"]), sid, int(side), int(e["MDEntryPx"]) * scale,
                                                 int(e["MDDisplayQty"])) is None:
                self.rejected += 1
        iid = self._instrument_of(sid)
        if iid and self.mbo:
            rows: list[tuple] = [(ts, 0, 0.0, 0, iid, Kind.RESET, Side.NONE, int(Flag.SNAPSHOT))]
            rows += [(ts, p, s, 0, iid, Kind.BOOK, side, int(Flag.SNAPSHOT)) for side, p, s in self.orders.published(sid)]
            rows[-1] = (*rows[-1][:7], int(Flag.SNAPSHOT | Flag.LAST))
            self._rows.extend(rows)

    # ---- output
    def take(self, recv_ns: int) -> np.ndarray | None:
        """The records of every completed event since the last call."""
        if not self._rows:
            return None
        rows = np.array(self._rows, _ROW)
        out = np.zeros(len(rows), RECORD_DTYPE)
        for name in _ROW.names or ():
            out[name] = rows[name]
        out["ts_recv"] = recv_ns
        self._rows.clear()
        return out
