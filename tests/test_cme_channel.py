"""The CME channel's compiled state machine against a plain-Python reference written here: random
streams of book entries (every action, outright and implied, bad levels and types), trades,
order updates (47 and 46's order entries), RptSeq repeats and jumps and ChannelReset4s, cut into
packets and batches at random, with books invalidated and rebuilt from 52 and 53 snapshots
between batches, must give the same records (LAST and SNAPSHOT flags included), rejections and
instrument gaps as the reference, which keeps books as lists and sums order levels afresh."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.shm.records import RECORD_DTYPE, Flag, Kind

SCHEMA = load_schema()
DECODER = Decoder(SCHEMA)
IDS = {7: 1, 8: 2}
"""SecurityID -> instrument id; 9 is in the stream but not subscribed."""
PRICE_NULL, SIZE_NULL = 2**63 - 1, 2**31 - 1
NEW, CHANGE, DELETE, DELETE_THRU, DELETE_FROM, OVERLAY = range(6)
TYPES = {b"0": (1, False), b"1": (2, False), b"E": (1, True), b"F": (2, True)}
EOE = 0x80

_sid = st.sampled_from((7, 8, 9))
_price = st.sampled_from((100, 200, 300, 400, PRICE_NULL))
_entry = st.tuples(_sid, st.sampled_from((0, 1, 1, 1, 2)), st.integers(0, 4), st.integers(0, 6),
                   st.sampled_from(tuple(TYPES) + (b"J",)), _price, st.sampled_from((1, 5, 9, SIZE_NULL)))
_order_entry = st.tuples(st.integers(1, 6), st.sampled_from((1, 2, 3, 255)), st.integers(0, 3), st.integers(0, 9))
_order = st.tuples(st.integers(1, 6), _sid, st.integers(0, 3), st.sampled_from((b"0", b"1", b"E")), _price,
                   st.integers(0, 9))
_message = st.one_of(
    st.tuples(st.just("book"), st.booleans(), st.lists(_entry, min_size=1, max_size=4),
              st.lists(_order_entry, max_size=2)),
    st.tuples(st.just("trade"), st.booleans(), _sid, st.sampled_from((0, 1, 2)), st.integers(0, 2)),
    st.tuples(st.just("orders"), st.booleans(), st.lists(_order, min_size=1, max_size=3)),
    st.tuples(st.just("reset"),),
)


class Reference:
    """The channel's rules, plainly: lists of levels, a dict of orders, records as tuples."""

    def __init__(self, *, depth: int, merge: bool, mbo: bool):
        self.depth, self.merge, self.mbo = depth, merge, mbo
        self.levels: dict[tuple[int, int, bool], list[list[int]]] = {}
        self.books: list[int] = []
        self.last: dict[int, int] = {}
        self.book_rpt: dict[int, int] = {}
        self.order_seq: dict[int, int] = {}
        self.resynced: set[int] = set()
        self.orders: dict[int, tuple[int, int, int, int]] = {}
        self.event: list[list] = []
        self.rows: list[tuple] = []
        self.rejected = 0
        self.gaps: list[tuple[int, int, int]] = []

    def published(self, sid: int, side: int, price: int) -> float:
        if self.merge:
            return float(sum(s for implied in (False, True) for p, s in self.levels.get((sid, side, implied), [])
                             if p == price))
        return float({p: s for p, s in self.levels.get((sid, side, False), [])}.get(price, 0))

    def total(self, sid: int, side: int, price: int) -> float:
        return float(sum(q for s, sd, p, q in self.orders.values() if (s, sd, p) == (sid, side, price)))

    def row(self, ts, price, size, seq, sid, kind, side, flags=0):
        self.event.append([ts, price, size, seq, IDS[sid], kind, side, flags])

    def end_event(self):
        seen = set()
        for row in reversed(self.event):
            if row[4] not in seen:
                seen.add(row[4])
                row[7] = int(Flag.LAST)
        self.rows += [tuple(r) for r in self.event]
        self.event = []

    def fresh(self, sid: int, rpt: int) -> tuple[bool, bool]:
        """RptSeq: (not applied yet (a jump is recorded unless just rebuilt), not in the book yet
        (a book starts at RptSeq 0, a rebuilt one at its snapshot's))."""
        last = self.last.get(sid)
        if last is not None and rpt <= last:
            return False, False
        if last is not None and rpt != last + 1 and sid not in self.resynced:
            self.gaps.append((sid, last + 1, rpt))
        self.resynced.discard(sid)
        self.last[sid] = rpt
        covered = rpt <= self.book_rpt.get(sid, 0)
        self.book_rpt[sid] = max(rpt, self.book_rpt.get(sid, 0))
        return True, not covered

    def book_entry(self, ts, seq, sid, level, action, etype, price, size):
        if etype not in TYPES or self.mbo:
            return
        side, implied = TYPES[etype]
        if sid not in self.books:
            self.books.append(sid)
        lv = self.levels.setdefault((sid, side, implied), [])
        price = 0 if price == PRICE_NULL else price
        size = 0 if size == SIZE_NULL else size
        i = level - 1
        if action == NEW and 0 <= i <= len(lv) and i < self.depth:
            lv.insert(i, [price, size])
            touched = [price] + ([lv.pop()[0]] if len(lv) > self.depth else [])
        elif action in (CHANGE, OVERLAY) and 0 <= i < len(lv):
            touched = [lv[i][0], price]
            lv[i] = [price, size]
        elif action == DELETE and 0 <= i < len(lv):
            touched = [lv.pop(i)[0]]
        elif action == DELETE_THRU:
            touched = [p for p, _ in lv]
            lv.clear()
        elif action == DELETE_FROM:
            touched = [p for p, _ in lv[:level]]
            del lv[:level]
        else:
            self.rejected += 1
            return
        if implied and not self.merge:
            return
        for p in dict.fromkeys(touched):
            self.row(ts, p, self.published(sid, side, p), seq, sid, Kind.BOOK, side)

    def order(self, ts, seq, order_id, sid, action, etype, price, qty):
        if seq <= self.order_seq.get(sid, 0):
            return  # its order snapshot holds it
        side = {b"0": 1, b"1": 2}.get(etype)
        if side is None or (price == PRICE_NULL and action != DELETE):
            self.rejected += 1
            return
        price = 0 if price == PRICE_NULL else price
        old = self.orders.get(order_id)
        if action == NEW and old is None:
            self.orders[order_id] = (sid, side, price, qty)
            touched = [(side, price)]
        elif action in (CHANGE, DELETE) and old is not None and old[0] == sid:
            del self.orders[order_id]
            touched = [old[1:3]]
            if action == CHANGE:
                self.orders[order_id] = (sid, side, price, qty)
                touched.append((side, price))
        else:
            self.rejected += 1
            return
        if self.mbo and sid in IDS:
            for s, p in dict.fromkeys(touched):
                self.row(ts, p, self.total(sid, s, p), seq, sid, Kind.BOOK, s)

    def reset(self, ts, seq):
        for sid in sorted(set(self.books) | {o[0] for o in self.orders.values()}):
            self.drop(sid)
            if sid not in self.books:
                self.books.append(sid)
            if sid in IDS:
                self.row(ts, 0, 0.0, seq, sid, Kind.RESET, 0, int(Flag.LAST))
        self.last.clear()
        self.book_rpt.clear()
        self.order_seq.clear()

    def drop(self, sid: int) -> None:
        for key in [k for k in self.levels if k[0] == sid]:
            self.levels[key] = []
        self.orders = {i: o for i, o in self.orders.items() if o[0] != sid}

    def invalidate(self, sids, ts):
        self.event = []
        for sid in sids:
            self.drop(sid)
            if sid not in self.books:
                self.books.append(sid)
            if sid in IDS:
                self.rows.append((ts, 0, 0.0, 0, IDS[sid], Kind.RESET, 0, int(Flag.LAST)))

    def snapshot_rows(self, sid, ts, levels):
        rows = [(ts, 0, 0.0, 0, IDS[sid], Kind.RESET, 0, int(Flag.SNAPSHOT))]
        rows += [(ts, p, size, 0, IDS[sid], Kind.BOOK, side, int(Flag.SNAPSHOT)) for side, p, size in levels]
        self.rows += rows[:-1] + [(*rows[-1][:7], int(Flag.SNAPSHOT | Flag.LAST))]

    def rebuild(self, sid, rpt, entries, ts):
        for key in [k for k in self.levels if k[0] == sid]:
            self.levels[key] = []
        if sid not in self.books:
            self.books.append(sid)
        self.book_rpt[sid] = rpt
        self.resynced.add(sid)
        for level, etype, price, size in entries:
            if etype not in TYPES or level == 127 or price == PRICE_NULL:
                continue
            lv = self.levels.setdefault((sid, *TYPES[etype]), [])
            if level - 1 == len(lv) < self.depth:
                lv.append([price, size])
        if sid in IDS and not self.mbo:
            levels = []
            for side in (1, 2):
                prices = [p for implied in ((False, True) if self.merge else (False,))
                          for p, _ in self.levels.get((sid, side, implied), [])]
                levels += [(side, p, self.published(sid, side, p)) for p in dict.fromkeys(prices)]
            self.snapshot_rows(sid, ts, levels)

    def rebuild_orders(self, sid, last_seq, entries, ts):
        self.orders = {i: o for i, o in self.orders.items() if o[0] != sid}
        self.order_seq[sid] = last_seq
        self.resynced.add(sid)
        for order_id, etype, price, qty in entries:
            side = {b"0": 1, b"1": 2}.get(etype)
            if side is None or order_id in self.orders:
                self.rejected += 1
            else:
                self.orders[order_id] = (sid, side, price, qty)
        if sid in IDS and self.mbo:
            keys = dict.fromkeys((o[1], o[2]) for o in self.orders.values() if o[0] == sid)
            self.snapshot_rows(sid, ts, [(side, p, self.total(sid, side, p)) for side, p in keys])


def _encode(messages, rpt: dict[int, int]) -> tuple[list[bytes], list[tuple]]:
    """Each message as wire bytes, and as the reference reads it (RptSeq made absolute)."""
    wire, plain = [], []
    for ts, msg in enumerate(messages, start=1):
        if msg[0] == "reset":
            wire.append(encode_message(SCHEMA, 4, {"TransactTime": ts, "MatchEventIndicator": EOE},
                                       {"NoMDEntries": [{"ApplID": 1}]}))
            rpt.clear()
            plain.append(("reset", ts, True))
            continue
        eoe = msg[1]
        root = {"TransactTime": ts, "MatchEventIndicator": EOE if eoe else 0}
        if msg[0] == "book":
            entries = []
            for sid, step, level, action, etype, price, size in msg[2]:
                rpt[sid] = rpt.get(sid, 0) + step
                entries.append((sid, rpt[sid], level, action, etype, price, size))
            orders = [{"OrderID": o, "MDDisplayQty": q, "ReferenceID": ref, "OrderUpdateAction": a}
                      for o, ref, a, q in msg[3]]
            wire.append(encode_message(SCHEMA, 46, root, {"NoMDEntries": [
                {"MDEntryPx": p, "MDEntrySize": s, "SecurityID": sid, "RptSeq": r, "NumberOfOrders": 1,
                 "MDPriceLevel": lvl, "MDUpdateAction": a, "MDEntryType": t} for sid, r, lvl, a, t, p, s in entries],
                "NoOrderIDEntries": orders}))
            plain.append(("book", ts, eoe, entries, msg[3]))
        elif msg[0] == "trade":
            sid, aggr, step = msg[2], msg[3], msg[4]
            rpt[sid] = rpt.get(sid, 0) + step
            wire.append(encode_message(SCHEMA, 48, root, {"NoMDEntries": [
                {"MDEntryPx": 300, "MDEntrySize": 4, "SecurityID": sid, "RptSeq": rpt[sid], "NumberOfOrders": 1,
                 "AggressorSide": aggr, "MDUpdateAction": 0, "MDTradeEntryID": 1}], "NoOrderIDEntries": []}))
            plain.append(("trade", ts, eoe, sid, rpt[sid], aggr))
        else:
            wire.append(encode_message(SCHEMA, 47, root, {"NoMDEntries": [
                {"OrderID": o, "MDOrderPriority": 1, "MDEntryPx": p, "MDDisplayQty": q, "SecurityID": sid,
                 "MDUpdateAction": a, "MDEntryType": t} for o, sid, a, t, p, q in msg[2]]}))
            plain.append(("orders", ts, eoe, msg[2]))
    return wire, plain


def _apply_reference(ref: Reference, plain, seqs) -> None:
    mbo = ref.mbo
    for msg, seq in zip(plain, seqs, strict=True):
        kind, ts = msg[0], msg[1]
        if kind == "reset":
            ref.reset(ts, seq)
        elif kind == "trade":
            _, _, _, sid, rpt, aggr = msg
            if ref.fresh(sid, rpt)[0] and sid in IDS:
                ref.row(ts, 300, 4.0, seq, sid, Kind.TRADE, aggr)
        elif kind == "book":
            _, _, _, entries, orders = msg
            for sid, rpt, level, action, etype, price, size in entries:
                if all(ref.fresh(sid, rpt)) and sid in IDS:
                    ref.book_entry(ts, seq, sid, level, action, etype, price, size)
            if mbo:
                for order_id, idx, action, qty in orders:
                    if not 1 <= idx <= len(entries):  # ReferenceID names no MD entry (255: null)
                        ref.rejected += 1
                        continue
                    sid, _, _, _, etype, price, _ = entries[idx - 1]
                    ref.order(ts, seq, order_id, sid, action, etype, price, qty)
        elif mbo:  # order updates are only kept for a book from the orders
            for order_id, sid, action, etype, price, qty in msg[3]:
                ref.order(ts, seq, order_id, sid, action, etype, price, qty)
        if kind == "reset" or msg[2]:
            ref.end_event()


_snapshot_step = st.tuples(
    st.lists(_sid, max_size=2, unique=True), _sid, st.integers(0, 12),
    st.lists(st.tuples(st.sampled_from((1, 2, 3, 127)), st.sampled_from((*TYPES, b"J")), _price, st.integers(1, 9)),
             max_size=6),
    _sid, st.integers(0, 2),
    st.lists(st.tuples(st.integers(1, 6), st.sampled_from((b"0", b"1", b"E")), st.sampled_from((100, 200, 300)),
                       st.integers(0, 9)), max_size=4))
"""Between two batches: books invalidated, one rebuilt from a 52, one's orders from a 53 (its
LastMsgSeqNumProcessed near the last packet applied, so the next packets' updates may be in it)."""


def _snapshot_entries(template: int, root: dict, entries: list[dict]) -> np.ndarray:
    dec = DECODER.decode([encode_packet(1, 0, [encode_message(SCHEMA, template, root, {"NoMDEntries": entries})])])
    return dec.group(template, "NoMDEntries")[1]


def _snapshot(channel: Channel, ref: Reference, snap, applied: int) -> None:
    invalid, sid, rpt, levels, order_sid, ahead, orders = snap
    ts, last_seq = 1000 + applied, applied + ahead
    channel.invalidate(invalid, ts)
    ref.invalidate(invalid, ts)
    entries = _snapshot_entries(52, {"SecurityID": sid, "RptSeq": rpt}, [
        {"MDEntryPx": p, "MDEntrySize": s, "NumberOfOrders": 1, "MDPriceLevel": lvl, "MDEntryType": t}
        for lvl, t, p, s in levels])
    channel.rebuild(sid, rpt, entries, channel.exponent[52], ts)
    ref.rebuild(sid, rpt, levels, ts)
    entries = _snapshot_entries(53, {"SecurityID": order_sid}, [
        {"OrderID": o, "MDOrderPriority": 1, "MDEntryPx": p, "MDDisplayQty": q, "MDEntryType": t}
        for o, t, p, q in orders])
    channel.rebuild_orders(order_sid, last_seq, entries, ts)
    ref.rebuild_orders(order_sid, last_seq, orders, ts)


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, min_size=1, max_size=40), st.lists(st.integers(1, 3), min_size=40, max_size=40),
       st.lists(st.tuples(st.integers(1, 4), st.one_of(st.none(), _snapshot_step)), min_size=40, max_size=40),
       st.sampled_from((1, 2, 10)), st.booleans(), st.booleans())
def test_records_equal_the_reference(messages, per_packet, batches, depth, merge, mbo):
    wire, plain = _encode(messages, {})
    packets, seqs, i = [], [], 0
    for n in per_packet:  # messages cut into packets (of [i, i + n) messages)
        if i >= len(wire):
            break
        packets.append((encode_packet(len(packets) + 1, 0, wire[i:i + n]), i, min(i + n, len(wire))))
        seqs += [len(packets)] * len(wire[i:i + n])
        i += n
    gaps: list = []
    channel = Channel(SCHEMA, lambda sid: IDS.get(sid, 0), depth=depth, merge_implied=merge, mbo=mbo,
                      on_instrument_gap=lambda *g: gaps.append(g))
    ref = Reference(depth=depth, merge=merge, mbo=mbo)
    out, p = [], 0
    for n, snap in batches:  # packets cut into batches (an event may span two), snapshots between
        if p >= len(packets):
            break
        batch = packets[p:p + n]
        channel.apply(DECODER.decode([b for b, _, _ in batch]))
        lo, hi = batch[0][1], batch[-1][2]
        _apply_reference(ref, plain[lo:hi], seqs[lo:hi])
        p += n
        if snap is not None:
            _snapshot(channel, ref, snap, p)
        if (got := channel.take(0)) is not None:
            out.append(got)
    records = np.concatenate(out) if out else np.zeros(0, RECORD_DTYPE)
    fields = ["ts_event", "price", "size", "sequence", "instrument_id", "kind", "side", "flags"]
    assert records[fields].tolist() == ref.rows
    assert channel.rejected == ref.rejected
    assert gaps == ref.gaps
    for sid in (7, 8):
        for side in (1, 2):
            for implied in (False, True):
                assert channel.levels(sid)[(side, implied)] == ref.levels.get((sid, side, implied), [])
