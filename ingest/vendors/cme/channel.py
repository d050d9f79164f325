"""One MDP 3.0 channel's market state: decoded incremental packets in, our records out.

Book updates are applied as they come but published only at ``EndOfEvent`` (bit 7 of
MatchEventIndicator), so a subscriber never sees half an event; ``Flag.LAST`` marks each
instrument's last record of the event. ``RptSeq`` is tracked per instrument across every
template that carries it: an entry at or below the instrument's last RptSeq was already
applied (a snapshot covered it) and is skipped; one past the next is an instrument gap.
A ChannelReset4 clears every book of the channel. Snapshots (SnapshotFullRefresh52) rebuild
a book and set its RptSeq.

Order updates (47, and the order entries of 46 which take price, side and instrument from the
MD entry their ``ReferenceID`` names) keep every resting order. They carry no RptSeq: an
instrument's orders rebuilt from SnapshotFullRefreshOrderBook53 skip the updates of packets up
to its ``LastMsgSeqNumProcessed``. With ``mbo`` the published book comes from the orders,
otherwise from the MBP levels; only that one is kept (the other is not rebuilt after a gap),
unless ``keep_both`` (the venue, which snapshots both and never has gaps). The fills of 48's
order entries change nothing, the order updates that follow them do.

Python here only gathers each batch's messages, MD entries and order entries into flat columns
(vectorized, per template); one compiled call (`channel_kernels.apply_batch`) then runs the
state machine over the whole batch and writes the records.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamctl.ingest.vendors.cme import channel_kernels as k
from streamctl.ingest.vendors.cme.decoder import Decoded
from streamctl.ingest.vendors.cme.schema import Block, Schema, Template
from streamctl.shm.records import RECORD_DTYPE, Flag, Kind, Side

__all__ = ["Channel", "BOOK_TEMPLATES", "TRADE_TEMPLATES"]

BOOK_TEMPLATES = (32, 46)
"""MDIncrementalRefreshBook (legacy 32, current 46)."""
TRADE_TEMPLATES = (42, 48)
"""MDIncrementalRefreshTradeSummary (legacy 42, current 48)."""
ORDER_TEMPLATE = 47
"""MDIncrementalRefreshOrderBook."""
RESET_TEMPLATE = 4
"""ChannelReset4."""
_INT64_MIN = np.iinfo(np.int64).min
_PRICE_NULL = 2**63 - 1


def _px_exponent(template: Template) -> int | None:
    for group in template.groups:
        for f in group.fields:
            if f.name == "MDEntryPx":
                return f.exponent
    return None


def _scale(exponent: int | None) -> int:
    """Multiplier of a schema price mantissa into our 1e-9 fixed point."""
    return 10 ** (9 + (exponent if exponent is not None else -9))


def _column(rows: np.ndarray, name: str) -> np.ndarray:
    """A field as int64 (a one-byte char as its code), zeros where the template has no such field."""
    if name not in (rows.dtype.names or ()):
        return np.zeros(len(rows), np.int64)
    col = rows[name]
    if col.dtype.kind == "S":
        col = col.view(np.uint8)
    return col.astype(np.int64)


class Fields:
    """Where `channel_kernels.gather` finds each column, per template, from the schema: the root's
    TransactTime and MatchEventIndicator; the MD entries of templates whose NoMDEntries carry
    SecurityID and RptSeq (their RptSeq is tracked); order entries (47's NoMDEntries, 46's
    NoOrderIDEntries) only when ``orders``."""

    def __init__(self, schema: Schema, *, orders: bool):
        size = max(schema.templates) + 1
        self.root = np.zeros((size, len(k.ROOT_COLUMNS), 6), np.int64)
        self.md = np.zeros((size, len(k.MD_COLUMNS), 6), np.int64)
        self.ord = np.zeros((size, len(k.ORDER_COLUMNS), 6), np.int64)
        self.md_group = np.full(size, -1, np.int64)
        self.ord_group = np.full(size, -1, np.int64)
        self.ord_own = np.zeros(size, np.bool_)
        for tid, t in schema.templates.items():
            self._fill(self.root[tid], t.root, k.ROOT_COLUMNS)
            for g, group in enumerate(t.groups):
                names = {f.name for f in group.fields}
                if group.name == "NoMDEntries" and {"SecurityID", "RptSeq"} <= names:
                    self.md_group[tid] = g
                    self._fill(self.md[tid], group, k.MD_COLUMNS)
                own = tid == ORDER_TEMPLATE and group.name == "NoMDEntries"
                if orders and (own or (tid in BOOK_TEMPLATES and group.name == "NoOrderIDEntries")):
                    self.ord_group[tid], self.ord_own[tid] = g, own
                    action = "MDUpdateAction" if own else "OrderUpdateAction"
                    self._fill(self.ord[tid], group, tuple(action if c == "Action" else c for c in k.ORDER_COLUMNS))

    @staticmethod
    def _fill(table: np.ndarray, block: Block, columns: tuple[str, ...]) -> None:
        fields = {f.name: f for f in block.fields}
        for c, name in enumerate(columns):
            f = fields.get(name)
            if f is None:
                continue
            null = f.null if isinstance(f.null, int) else int.from_bytes(f.null or b"\0", "little")
            if f.size == 8 and null >= 2**63:  # an unsigned 8-byte null, as its int64 bits
                null -= 2**64
            table[c] = (1, f.offset, f.size, np.dtype(f.dtype).kind == "i", f.since_version, null)


class Channel:
    """Books, orders, RptSeq and symbols of one channel; `apply` consumes packets in MsgSeqNum order.

    ``instrument_of`` maps a SecurityID to our instrument id (0: not subscribed); it is asked
    once per SecurityID, the first time the channel sees it."""

    def __init__(self, schema: Schema, instrument_of: Callable[[int], int], *, depth: int = 10, merge_implied: bool = False,
                 mbo: bool = False, keep_both: bool = False, on_instrument_gap: Callable[[int, int, int], None] = lambda sid, want, got: None):
        self._instrument_of = instrument_of
        self.exponent = {tid: _px_exponent(t) for tid, t in schema.templates.items()}
        """Per template: the exponent of its entries' MDEntryPx (-7 legacy, -9 current)."""
        self._depth = depth
        self._merge = merge_implied
        self._on_gap = on_instrument_gap
        self.mbo = mbo
        """Publish the book from the orders (MBO) instead of the MBP levels."""
        self._keep_mbp, self._keep_mbo = keep_both or not mbo, keep_both or mbo
        size = max(schema.templates) + 2  # the last row: any template the schema does not know
        self._kind = np.full(size, k.T_OTHER, np.int64)
        self._kind[list(TRADE_TEMPLATES)] = k.T_TRADE
        self._kind[list(BOOK_TEMPLATES)] = k.T_BOOK
        self._kind[RESET_TEMPLATE] = k.T_RESET
        self._scale = np.ones(size, np.int64)
        for tid, e in self.exponent.items():
            self._scale[tid] = _scale(e)
        self._fields = Fields(schema, orders=self._keep_mbo)
        self._orders, self._totals, self._slot_of = k.new_tables()
        self._slots: dict[int, int] = {}
        """SecurityID -> instrument slot (row of the state arrays): the kernels' map ``_slot_of``
        mirrored, so Python never touches the typed dict."""
        self._inst = np.zeros((0, k.I_COLS), np.int64)
        self._px = np.zeros((0, 4, depth), np.int64)
        self._sz = np.zeros((0, 4, depth), np.int64)
        self._cnt = np.zeros((0, 4), np.int64)
        self._mark = np.zeros(0, np.int64)
        self._grow(16)
        self._stats = np.zeros(k.S_COLS, np.int64)
        self._stats[k.S_LAST_TS] = _INT64_MIN
        self._done: list[np.ndarray] = []
        """Records of completed events (and rebuilds), until `take`."""
        self._event = np.zeros(0, RECORD_DTYPE)
        self._event_slots = np.zeros(0, np.int64)
        """The records of an event not ended yet (and the slot of each)."""

    # ---- instrument slots
    def _grow(self, capacity: int) -> None:
        old = len(self._inst)
        for name in ("_inst", "_px", "_sz", "_cnt", "_mark"):
            arr = getattr(self, name)
            grown = np.zeros((capacity, *arr.shape[1:]), arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)

    def _slot(self, sid: int) -> int:
        if sid not in self._slots:
            k.add_slot(self._slot_of, sid)
            self._new_slot(sid)
        return self._slots[sid]

    def _new_slot(self, sid: int) -> None:
        """State for a SecurityID the kernels just gave the next slot."""
        slot = self._slots[sid] = len(self._slots)
        if slot >= len(self._inst):
            self._grow(2 * len(self._inst))
        self._inst[slot, k.I_SID] = sid
        self._inst[slot, k.I_IID] = self._instrument_of(sid) or 0
        self._inst[slot, k.I_RPT] = -1

    # ---- incrementals
    def _gather(self, dec: Decoded) -> tuple[np.ndarray, ...]:
        """`channel_kernels.gather` over a decoded batch; new SecurityIDs get their slots."""
        msgs, ents = dec.framing()
        f = self._fields
        *cols, new_sids = k.gather(dec.buf, msgs, dec.msg_pkt, ents, dec.seq.astype(np.int64),
                                   dec.sending_time.astype(np.int64), f.root, f.md_group, f.md, f.ord_group, f.ord_own,
                                   f.ord, self._slot_of)
        for sid in new_sids.tolist():
            self._new_slot(sid)
        return tuple(cols)

    def apply(self, dec: Decoded) -> None:
        """Apply every message of every framed packet of `dec`, in batch (MsgSeqNum) order."""
        if not len(dec.msg_tid):
            return
        ts, has_tt, mei, seq, m_ent, m_ord, md, od = self._gather(dec)
        tid = np.minimum(dec.msg_tid, len(self._kind) - 1)
        kind = self._kind[tid]
        carried = len(self._event)
        capacity = carried + len(md) * max(self._depth, 2) + 2 * len(od) \
            + int((kind == k.T_RESET).sum()) * len(self._slots)
        out = np.empty(capacity, RECORD_DTYPE)
        out[:carried] = self._event
        row_slot = np.empty(capacity, np.int64)
        row_slot[:carried] = self._event_slots
        gaps = np.empty((len(md), 3), np.int64)
        n, done, n_gaps = k.apply_batch(
            kind, ts, has_tt, mei, seq, self._scale[tid], m_ent, m_ord, md, od, self._inst, len(self._slots),
            self._px, self._sz, self._cnt, self._orders, self._totals, self._depth, self._merge, self._keep_mbp,
            self._keep_mbo, self.mbo, out.view(np.int64).reshape(-1, 8), out.view(np.float64).reshape(-1, 8),
            row_slot, carried, self._mark, self._stats, gaps)
        if done:
            self._done.append(out[:done])
        self._event = out[done:n].copy()
        self._event_slots = row_slot[done:n].copy()
        for sid, want, got in gaps[:n_gaps].tolist():
            self._on_gap(sid, want, got)

    def contiguous(self, dec: Decoded) -> set[int]:
        """SecurityIDs whose first MD entry in `dec` continues their RptSeq (last applied + 1):
        nothing of theirs was lost before it."""
        md = self._gather(dec)[6]
        slots, first = np.unique(md[:, k.MD_SLOT], return_index=True)
        last = self._inst[slots, k.I_RPT]
        ok = (last >= 0) & (md[first, k.MD_RPT] == last + 1)
        return set(self._inst[slots[ok], k.I_SID].tolist())

    def expect_jumps(self, keep: set[int]) -> None:
        """After packets lost on both feeds and no recovery: every instrument but `keep` may skip
        RptSeq once without an instrument gap (the packet gap is already counted)."""
        inst = self._inst[:len(self._slots)]
        inst[:, k.I_RESYNCED] = ~np.isin(inst[:, k.I_SID], list(keep))

    # ---- recovery
    def invalidate(self, sids: list[int], ts: int) -> None:
        """Books about to be rebuilt: cleared and published as empty (a RESET), never as valid."""
        self._event = self._event[:0]
        self._event_slots = self._event_slots[:0]
        for sid in sids:
            slot = self._slot(sid)
            k.clear_instrument(self._inst, self._stats, self._cnt, self._orders, self._totals, slot)
            iid = int(self._inst[slot, k.I_IID])
            if iid:
                self._publish(iid, ts, Kind.RESET, Flag.LAST)

    def rebuild(self, sid: int, rpt_seq: int, entries: np.ndarray, exponent: int | None, ts: int) -> None:
        """Replace one instrument's book with a snapshot's levels (records flagged SNAPSHOT)."""
        slot = self._slot(sid)
        self._inst[slot, k.I_BOOK_RPT] = rpt_seq
        self._inst[slot, k.I_RESYNCED] = 1
        raw = _column(entries, "MDEntryPx")
        scale = _scale(exponent)
        limit = _PRICE_NULL // scale
        fits = (raw >= -limit) & (raw <= limit)  # past it the product wraps: such a level is left out
        prices = np.where(fits & (raw != _PRICE_NULL), raw * scale, _PRICE_NULL)
        k.rebuild_levels(self._inst, self._stats, self._px, self._sz, self._cnt, self._depth, slot,
                         _column(entries, "MDEntryType"), _column(entries, "MDPriceLevel"), prices,
                         _column(entries, "MDEntrySize"))
        iid = int(self._inst[slot, k.I_IID])
        if iid and not self.mbo:
            self._publish_snapshot(iid, ts, *k.book_published(self._px, self._sz, self._cnt, slot, self._merge))

    def rebuild_orders(self, sid: int, last_seq: int, entries: np.ndarray, ts: int) -> None:
        """Replace one instrument's orders with a SnapshotFullRefreshOrderBook53's (all its chunks);
        order updates of packets up to `last_seq` are then skipped."""
        slot = self._slot(sid)
        k.clear_orders(self._inst, self._orders, self._totals, slot)
        self._inst[slot, k.I_ORDER_SEQ] = last_seq
        self._inst[slot, k.I_RESYNCED] = 1
        self._stats[k.S_REJECTED] += k.add_orders(
            self._orders, self._totals, self._inst, slot, _column(entries, "OrderID"), _column(entries, "MDEntryType"),
            _column(entries, "MDEntryPx") * _scale(self.exponent.get(53)), _column(entries, "MDDisplayQty"))
        iid = int(self._inst[slot, k.I_IID])
        if iid and self.mbo:
            self._publish_snapshot(iid, ts, *k.order_levels(self._totals, slot))

    def _publish(self, iid: int, ts: int, kind: Kind, flags: Flag, sides: np.ndarray | None = None,
                 prices: np.ndarray | None = None, sizes: np.ndarray | None = None) -> None:
        rows = np.zeros(1 if sides is None else len(sides), RECORD_DTYPE)
        rows["ts_event"], rows["instrument_id"], rows["kind"], rows["flags"] = ts, iid, kind, flags
        if sides is not None:
            rows["side"], rows["price"], rows["size"] = sides, prices, sizes
        self._done.append(rows)

    def _publish_snapshot(self, iid: int, ts: int, sides: np.ndarray, prices: np.ndarray, sizes: np.ndarray) -> None:
        """A rebuilt book: a RESET, then its levels, all flagged SNAPSHOT, the last also LAST."""
        self._publish(iid, ts, Kind.RESET, Flag.SNAPSHOT)
        self._publish(iid, ts, Kind.BOOK, Flag.SNAPSHOT, sides, prices, sizes)
        last = self._done[-1] if len(sides) else self._done[-2]
        last["flags"][-1] = Flag.SNAPSHOT | Flag.LAST

    # ---- state, for the venue's snapshots, the session and tests
    def book_sids(self) -> list[int]:
        """Every SecurityID with a book, in the order the books were made."""
        inst = self._inst[:len(self._slots)]
        have = inst[inst[:, k.I_HAS_BOOK] == 1]
        return have[np.argsort(have[:, k.I_BORN]), k.I_SID].tolist()

    def levels(self, sid: int) -> dict[tuple[int, bool], list[list[int]]]:
        """One instrument's level books: (side, implied) -> [[price, size], ...], best first."""
        slot = self._slots.get(sid)
        out: dict[tuple[int, bool], list[list[int]]] = {}
        for side in (Side.BID, Side.ASK):
            for implied in (False, True):
                b = 2 * (side - 1) + implied
                n = 0 if slot is None else int(self._cnt[slot, b])
                out[(int(side), implied)] = [] if slot is None else \
                    np.stack([self._px[slot, b, :n], self._sz[slot, b, :n]], axis=1).tolist()
        return out

    def resting_orders(self) -> list[tuple[int, int, int, int, int]]:
        """Every resting order (OrderID, SecurityID, side, price, quantity), in arrival order."""
        rows = k.order_rows(self._orders)
        sids = self._inst[rows[:, 1], k.I_SID]
        return [(o, s, side, p, q) for (o, _, side, p, q), s in zip(rows.tolist(), sids.tolist(), strict=True)]

    def rpt_seq(self, sid: int) -> int:
        """The last RptSeq applied for `sid` (0: none since the start or the last ChannelReset4)."""
        slot = self._slots.get(sid)
        return 0 if slot is None else max(0, int(self._inst[slot, k.I_RPT]))

    @property
    def rejected(self) -> int:
        """Book entries and order updates that did not fit the state (a level past its end, an unknown order)."""
        return int(self._stats[k.S_REJECTED])

    @property
    def ts_regressions(self) -> int:
        """Messages whose TransactTime is before an earlier message's on this channel."""
        return int(self._stats[k.S_TS_REGRESSIONS])

    # ---- output
    def take(self, recv_ns: int) -> np.ndarray | None:
        """The records of every completed event since the last call."""
        if not self._done:
            return None
        out = np.concatenate(self._done)
        out["ts_recv"] = recv_ns
        self._done.clear()
        return out
