"""Numba kernels of one MDP 3.0 channel's state: MBP level books, MBO order tables, RptSeq, and
our 64-byte records written straight into an output array, one call per batch of packets.

The rules are the channel's (`streamctl.ingest.vendors.cme.channel` says them); this module
only holds the compiled state machine, in one file because numba's on-disk cache is keyed on
the defining file only.

State, per instrument slot (a SecurityID seen by the channel): ``inst[slot, col]`` with the
``I_*`` columns; MBP books ``px/sz[slot, book, level]`` and ``cnt[slot, book]`` where
``book = 2 * (side - 1) + implied``, best level first; MBO orders in a typed dict
``OrderID -> (slot, side, price, quantity)`` and level totals ``(slot, side, price) -> total``
(insertion-ordered, so a rebuilt book lists its levels in the order the orders came).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.typed import Dict

from streamctl.ingest.vendors.cme.book import CHANGE, DELETE, DELETE_FROM, DELETE_THRU, NEW, OVERLAY

__all__ = [
    "gather", "apply_batch", "rebuild_levels", "book_published", "add_orders", "clear_instrument", "clear_orders",
    "order_levels", "order_rows", "new_tables", "add_slot",
    "ROOT_COLUMNS", "MD_COLUMNS", "ORDER_COLUMNS", "F_PRESENT", "F_OFFSET", "F_WIDTH", "F_SIGNED", "F_SINCE", "F_NULL",
    "MD_SLOT", "MD_SID", "MD_RPT", "MD_PX", "MD_SIZE", "MD_LEVEL", "MD_ACTION", "MD_TYPE", "MD_AGGR",
    "OD_SLOT", "OD_ID", "OD_REF", "OD_SID", "OD_TYPE", "OD_PX", "OD_QTY", "OD_ACTION",
    "I_SID", "I_IID", "I_RPT", "I_BOOK_RPT", "I_ORDER_SEQ", "I_ORDERS", "I_HAS_BOOK", "I_RESYNCED", "I_BORN", "I_COLS",
    "S_REJECTED", "S_TS_REGRESSIONS", "S_LAST_TS", "S_BOOKS", "S_COLS", "T_OTHER", "T_TRADE", "T_BOOK", "T_RESET",
]

# inst columns
I_SID, I_IID, I_RPT, I_BOOK_RPT, I_ORDER_SEQ, I_ORDERS, I_HAS_BOOK, I_RESYNCED, I_BORN = range(9)
I_COLS = 9
"""SecurityID; our instrument id (0: not subscribed); last RptSeq applied (-1: none); last RptSeq
the book reflects (a snapshot's after a rebuild); the packet its orders were rebuilt at; resting
orders; a book exists (it is reset with the channel); rebuilt, so the next RptSeq may jump; when
its book was made (books are listed in that order)."""

# stats
S_REJECTED, S_TS_REGRESSIONS, S_LAST_TS, S_BOOKS = range(4)
S_COLS = 4

# what a message is, for the kernel (``m_kind``)
T_OTHER, T_TRADE, T_BOOK, T_RESET = range(4)

END_OF_EVENT = 0x80
_BOOK_KIND, _TRADE_KIND, _RESET_KIND = 3, 1, 4
_BID, _ASK = 1, 2
_LAST = 0x80
_INT32_NULL = 2**31 - 1
_PRICE_NULL = 2**63 - 1
_UINT8_NULL = 255
_CHAR_BID, _CHAR_ASK, _CHAR_IMPLIED_BID, _CHAR_IMPLIED_ASK = ord("0"), ord("1"), ord("E"), ord("F")

_ORDER = types.UniTuple(types.int64, 4)
_LEVEL = types.UniTuple(types.int64, 3)


@numba.njit(cache=True, nogil=True)
def new_tables():
    """Empty (orders, level totals, instrument map): OrderID -> (slot, side, price, quantity),
    (slot, side, price) -> total visible quantity, SecurityID -> slot. Made in compiled code:
    a typed dict made or touched from Python compiles its methods anew in every process (seconds),
    one made here comes from the cache."""
    return Dict.empty(types.int64, _ORDER), Dict.empty(_LEVEL, types.int64), Dict.empty(types.int64, types.int64)


@numba.njit(cache=True, nogil=True)
def add_slot(slot_of, sid):
    """Give SecurityID `sid` the next slot (it has none yet); returns it."""
    slot = len(slot_of)
    slot_of[sid] = slot
    return slot


# Field tables of `gather` (built from the schema by `channel.Fields`): per template and column,
# F_PRESENT (0: the template has no such field, read as 0), its offset in the block, width,
# signedness, sinceVersion and null value (read when the sender's block or version lacks it).
F_PRESENT, F_OFFSET, F_WIDTH, F_SIGNED, F_SINCE, F_NULL = range(6)
ROOT_COLUMNS = ("TransactTime", "MatchEventIndicator")
MD_COLUMNS = ("SecurityID", "RptSeq", "MDEntryPx", "MDEntrySize", "MDPriceLevel", "MDUpdateAction", "MDEntryType",
              "AggressorSide")
ORDER_COLUMNS = ("OrderID", "ReferenceID", "SecurityID", "MDEntryType", "MDEntryPx", "MDDisplayQty", "Action")
"""``Action`` is 47's MDUpdateAction or 46's OrderUpdateAction."""
MD_SLOT, MD_SID, MD_RPT, MD_PX, MD_SIZE, MD_LEVEL, MD_ACTION, MD_TYPE, MD_AGGR = range(9)
OD_SLOT, OD_ID, OD_REF, OD_SID, OD_TYPE, OD_PX, OD_QTY, OD_ACTION = range(8)
"""Columns of `gather`'s MD and order entry tables: the slot, then `MD_COLUMNS` / `ORDER_COLUMNS`."""


@numba.njit(cache=True, nogil=True, inline="always")
def _field(buf, base, block_length, version, spec):
    """One field of the block at `base` as int64 (two's complement for 8-byte unsigned)."""
    if not spec[F_PRESENT]:
        return np.int64(0)
    off, width = spec[F_OFFSET], spec[F_WIDTH]
    if off + width > block_length or version < spec[F_SINCE]:
        return spec[F_NULL]
    v = np.int64(0)
    for b in range(width):
        v |= np.int64(buf[base + off + b]) << (8 * b)
    if spec[F_SIGNED] and width < 8 and v >= (np.int64(1) << (8 * width - 1)):
        v -= np.int64(1) << (8 * width)
    return v


@numba.njit(cache=True, nogil=True)
def gather(buf, msgs, msg_pkt, ents, pkt_seq, pkt_time, root_f, md_group, md_f, ord_group, ord_own, ord_f, slot_of):
    """The channel's columns of one decoded batch, read straight from the wire (``msgs``/``ents``
    are the decoder's framing tables, in message order): per message (ts, TransactTime present,
    MatchEventIndicator, MsgSeqNum, [first, end) of its MD entries and of its order entries),
    per MD entry the `MD_COLUMNS` with the SecurityID's slot first, per order entry the
    `ORDER_COLUMNS` with the slot of a 47's own SecurityID (-1 for 46's, which name an MD
    entry), and the SecurityIDs seen for the first time (each given the next slot in ``slot_of``)."""
    n_msg, n_ent = msgs.shape[0], ents.shape[0]
    ts = np.empty(n_msg, np.int64)
    has_tt = np.zeros(n_msg, np.bool_)
    mei = np.zeros(n_msg, np.int64)
    seq = np.empty(n_msg, np.int64)
    m_ent = np.zeros((n_msg, 2), np.int64)
    m_ord = np.zeros((n_msg, 2), np.int64)
    md = np.empty((n_ent, len(MD_COLUMNS) + 1), np.int64)
    od = np.empty((n_ent, len(ORDER_COLUMNS) + 1), np.int64)
    new_sids = np.empty(n_ent, np.int64)
    n_md, n_od, n_new = 0, 0, 0
    e = 0
    for m in range(n_msg):
        tid, ver = msgs[m, 1], msgs[m, 2]
        known = tid < md_group.shape[0]
        seq[m] = pkt_seq[msg_pkt[m]]
        ts[m] = pkt_time[msg_pkt[m]]
        if known and root_f[tid, 0, F_PRESENT]:
            ts[m] = _field(buf, msgs[m, 0], msgs[m, 3], ver, root_f[tid, 0])
            has_tt[m] = True
        if known:
            mei[m] = _field(buf, msgs[m, 0], msgs[m, 3], ver, root_f[tid, 1])
        m_ent[m, 0], m_ord[m, 0] = n_md, n_od
        while e < n_ent and ents[e, 0] == m:
            g, base, bl = ents[e, 1], ents[e, 2], ents[e, 3]
            if known and g == md_group[tid]:
                for c in range(len(MD_COLUMNS)):
                    md[n_md, c + 1] = _field(buf, base, bl, ver, md_f[tid, c])
                sid = md[n_md, 1]
                if sid not in slot_of:
                    slot_of[sid] = len(slot_of)
                    new_sids[n_new] = sid
                    n_new += 1
                md[n_md, 0] = slot_of[sid]
                n_md += 1
            elif known and g == ord_group[tid]:
                for c in range(len(ORDER_COLUMNS)):
                    od[n_od, c + 1] = _field(buf, base, bl, ver, ord_f[tid, c])
                od[n_od, 0] = -1
                if ord_own[tid]:
                    od[n_od, 2] = -1
                    sid = od[n_od, 3]
                    if sid not in slot_of:
                        slot_of[sid] = len(slot_of)
                        new_sids[n_new] = sid
                        n_new += 1
                    od[n_od, 0] = slot_of[sid]
                n_od += 1
            e += 1
        m_ent[m, 1], m_ord[m, 1] = n_md, n_od
    return ts, has_tt, mei, seq, m_ent, m_ord, md[:n_md], od[:n_od], new_sids[:n_new]


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(out_w, out_f, row_slot, n, ts, price, size, seq, iid, kind, side, flags, slot):
    """Write record `n` through 8-byte word views of a RECORD_DTYPE array (ts_recv is set at take)."""
    out_w[n, 0] = ts
    out_w[n, 1] = 0
    out_w[n, 2] = price
    out_w[n, 3] = 0
    out_f[n, 4] = size
    out_w[n, 5] = 0
    out_w[n, 6] = seq
    out_w[n, 7] = (iid & 0xFFFFFFFF) | (kind << 32) | (side << 40) | (flags << 48)
    row_slot[n] = slot
    return n + 1


@numba.njit(cache=True, nogil=True)
def _end_event(out_w, row_slot, start, n, mark, stamp):
    """Flag each instrument's last record of the event [start, n) LAST (and only LAST)."""
    for i in range(n - 1, start - 1, -1):
        s = row_slot[i]
        if mark[s] != stamp:
            mark[s] = stamp
            out_w[i, 7] = (out_w[i, 7] & 0x0000FFFFFFFFFFFF) | (_LAST << 48)


@numba.njit(cache=True, nogil=True)
def _entry_book(etype):
    """MDEntryType -> book index (2 * (side - 1) + implied), or -1."""
    if etype == _CHAR_BID:
        return 0
    if etype == _CHAR_IMPLIED_BID:
        return 1
    if etype == _CHAR_ASK:
        return 2
    if etype == _CHAR_IMPLIED_ASK:
        return 3
    return -1


@numba.njit(cache=True, nogil=True)
def _size_at(px, sz, cnt, slot, book, price, merge):
    """The published size at `price` on the side of `book` (outright, plus implied when merged).
    Outright prices are unique on a side; a repeated one reads as its last occurrence."""
    outright = book & 2
    total = 0
    if merge:
        for b in (outright, outright + 1):
            for i in range(cnt[slot, b]):
                if px[slot, b, i] == price:
                    total += sz[slot, b, i]
        return total
    for i in range(cnt[slot, outright] - 1, -1, -1):
        if px[slot, outright, i] == price:
            return sz[slot, outright, i]
    return 0


@numba.njit(cache=True, nogil=True)
def _apply_level(px, sz, cnt, depth, slot, book, action, level, price, size, touched):
    """One MD entry on one level book; returns how many prices it touched (in `touched`), or -1
    when it does not fit (a level past the depth or past the side's end, an unknown action)."""
    n = cnt[slot, book]
    i = level - 1
    k = 0
    if action == NEW:
        if i < 0 or i > n or i >= depth:
            return -1
        end = min(n, depth - 1)
        popped = px[slot, book, depth - 1]
        for j in range(end, i, -1):
            px[slot, book, j] = px[slot, book, j - 1]
            sz[slot, book, j] = sz[slot, book, j - 1]
        px[slot, book, i] = price
        sz[slot, book, i] = size
        touched[0] = price
        k = 1
        if n == depth:
            touched[1] = popped
            k = 2
        else:
            cnt[slot, book] = n + 1
    elif action == CHANGE or action == OVERLAY:
        if i < 0 or i >= n:
            return -1
        touched[0] = px[slot, book, i]
        touched[1] = price
        px[slot, book, i] = price
        sz[slot, book, i] = size
        k = 2
    elif action == DELETE:
        if i < 0 or i >= n:
            return -1
        touched[0] = px[slot, book, i]
        for j in range(i, n - 1):
            px[slot, book, j] = px[slot, book, j + 1]
            sz[slot, book, j] = sz[slot, book, j + 1]
        cnt[slot, book] = n - 1
        k = 1
    elif action == DELETE_THRU:
        for j in range(n):
            touched[j] = px[slot, book, j]
        cnt[slot, book] = 0
        k = n
    elif action == DELETE_FROM:
        k = min(max(level, 0), n)
        for j in range(k):
            touched[j] = px[slot, book, j]
        for j in range(k, n):
            px[slot, book, j - k] = px[slot, book, j]
            sz[slot, book, j - k] = sz[slot, book, j]
        cnt[slot, book] = n - k
    else:
        return -1
    # keep the first occurrence of each price, in order
    u = 0
    for j in range(k):
        seen = False
        for q in range(u):
            if touched[q] == touched[j]:
                seen = True
                break
        if not seen:
            touched[u] = touched[j]
            u += 1
    return u


@numba.njit(cache=True, nogil=True, inline="always")
def _total(totals, key):
    """A level's total visible quantity (0 when no order rests there)."""
    if key in totals:
        return totals[key]
    return 0


@numba.njit(cache=True, nogil=True)
def _order_remove(orders, totals, inst, order_id):
    slot, side, price, qty = orders[order_id]
    del orders[order_id]
    inst[slot, I_ORDERS] -= 1
    key = (slot, side, price)
    left = _total(totals, key) - qty
    if left:
        totals[key] = left
    elif key in totals:  # (a zero-quantity order may have left the level before it)
        del totals[key]
    return side, price


@numba.njit(cache=True, nogil=True)
def _order_add(orders, totals, inst, order_id, slot, side, price, qty):
    orders[order_id] = (slot, side, price, qty)
    inst[slot, I_ORDERS] += 1
    key = (slot, side, price)
    totals[key] = _total(totals, key) + qty


@numba.njit(cache=True, nogil=True)
def _apply_order(orders, totals, inst, action, order_id, slot, side, price, qty, t_side, t_price):
    """One order update; how many levels it changed (in t_side/t_price), or -1 when it does not
    fit (a New of a resting order, a Change or Delete of an unknown one or of another instrument)."""
    k = 0
    if action == NEW:
        if order_id in orders:
            return -1
    elif action == CHANGE or action == DELETE:
        if order_id not in orders or orders[order_id][0] != slot:
            return -1
        t_side[0], t_price[0] = _order_remove(orders, totals, inst, order_id)
        k = 1
    else:
        return -1
    if action != DELETE:
        _order_add(orders, totals, inst, order_id, slot, side, price, qty)
        if k == 0 or t_side[0] != side or t_price[0] != price:
            t_side[k] = side
            t_price[k] = price
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def make_book(inst, stats, slot):
    """Mark one instrument's book as existing (it is then reset and listed with the channel's)."""
    if not inst[slot, I_HAS_BOOK]:
        inst[slot, I_HAS_BOOK] = 1
        inst[slot, I_BORN] = stats[S_BOOKS]
        stats[S_BOOKS] += 1


@numba.njit(cache=True, nogil=True)
def clear_instrument(inst, stats, cnt, orders, totals, slot):
    """Empty one instrument's books and orders (its book then exists, empty)."""
    for b in range(4):
        cnt[slot, b] = 0
    make_book(inst, stats, slot)
    clear_orders(inst, orders, totals, slot)


@numba.njit(cache=True, nogil=True)
def clear_orders(inst, orders, totals, slot):
    """Drop every order (and level total) of one instrument."""
    if inst[slot, I_ORDERS] == 0:
        return
    gone = [k for k, v in orders.items() if v[0] == slot]
    for k in gone:
        del orders[k]
    dead = [k for k in totals.keys() if k[0] == slot]
    for k in dead:
        del totals[k]
    inst[slot, I_ORDERS] = 0


_OVERFLOWED = -(2**63)
"""A price our fixed point cannot hold: the validation screen refuses it."""


@numba.njit(cache=True, nogil=True, inline="always")
def _fits(mantissa, scale):
    """Whether a schema price mantissa times `scale` (100 for the legacy -7 exponent) is an int64:
    past it the product wraps, and a hostile mantissa could wrap to any plausible price."""
    limit = (2**63 - 1) // scale
    return -limit <= mantissa <= limit


@numba.njit(cache=True, nogil=True)
def apply_batch(m_kind, m_ts, m_has_tt, m_mei, m_seq, m_scale, m_ent, m_ord, md, od, inst, n_slots, px, sz, cnt, orders, totals, depth, merge, keep_mbp, keep_mbo, mbo,
                out_w, out_f, row_slot, n, mark, stats, gaps):
    """Apply every message in order; records go to ``out`` from row `n` (rows before it are the
    previous call's unfinished event). Returns (rows written, rows of completed events, gaps).

    ``m_ent[m]``/``m_ord[m]`` are message m's ranges of the MD and order entry tables ``md`` and
    ``od`` (`gather`'s); a 46 order entry names its MD entry by ReferenceID (1-based in its
    message), a 47 has ReferenceID -1 and its own instrument, side and price.
    ``gaps[k] = (SecurityID, expected, received)``.
    """
    touched = np.empty(depth + 1, np.int64)
    t_side = np.empty(2, np.int64)
    t_price = np.empty(2, np.int64)
    ev_start = 0
    n_gaps = 0
    stamp = mark.max() + 1
    for m in range(m_kind.shape[0]):
        kind = m_kind[m]
        ts = m_ts[m]
        seq = m_seq[m]
        if m_has_tt[m]:
            if ts < stats[S_LAST_TS]:
                stats[S_TS_REGRESSIONS] += 1
            else:
                stats[S_LAST_TS] = ts
        if kind == T_RESET:
            order = np.argsort(inst[:n_slots, I_SID])
            for s in order:
                if inst[s, I_HAS_BOOK] or inst[s, I_ORDERS]:
                    clear_instrument(inst, stats, cnt, orders, totals, s)
                    if inst[s, I_IID]:
                        n = _emit(out_w, out_f, row_slot, n, ts, 0, 0.0, seq, inst[s, I_IID], _RESET_KIND, 0, _LAST, s)
            for s in range(n_slots):
                inst[s, I_RPT] = -1
                inst[s, I_BOOK_RPT] = 0
                inst[s, I_ORDER_SEQ] = 0
        scale = m_scale[m]
        for k in range(m_ent[m, 0], m_ent[m, 1]):
            s = md[k, MD_SLOT]
            rpt = md[k, MD_RPT]
            last = inst[s, I_RPT]
            if last >= 0 and rpt <= last:
                continue  # already applied
            if last >= 0 and rpt != last + 1 and not inst[s, I_RESYNCED]:
                if n_gaps < gaps.shape[0]:
                    gaps[n_gaps, 0] = inst[s, I_SID]
                    gaps[n_gaps, 1] = last + 1
                    gaps[n_gaps, 2] = rpt
                n_gaps += 1
            inst[s, I_RESYNCED] = 0
            inst[s, I_RPT] = rpt
            covered = rpt <= inst[s, I_BOOK_RPT]  # a snapshot holds its effect on the book
            inst[s, I_BOOK_RPT] = max(rpt, inst[s, I_BOOK_RPT])
            iid = inst[s, I_IID]
            if not iid:
                continue
            if kind == T_TRADE:
                aggr = md[k, MD_AGGR]
                side = _BID if aggr == 1 else (_ASK if aggr == 2 else 0)
                price = md[k, MD_PX] * scale if _fits(md[k, MD_PX], scale) else _OVERFLOWED
                n = _emit(out_w, out_f, row_slot, n, ts, price, float(md[k, MD_SIZE]), seq, iid, _TRADE_KIND, side, 0, s)
            elif kind == T_BOOK and not covered and keep_mbp:
                book = _entry_book(md[k, MD_TYPE])
                if book < 0:
                    continue
                size = md[k, MD_SIZE]
                size = 0 if size == _INT32_NULL else size
                if md[k, MD_PX] != _PRICE_NULL and not _fits(md[k, MD_PX], scale):
                    stats[S_REJECTED] += 1
                    continue
                price = 0 if md[k, MD_PX] == _PRICE_NULL else md[k, MD_PX] * scale
                make_book(inst, stats, s)
                u = _apply_level(px, sz, cnt, depth, s, book, md[k, MD_ACTION], md[k, MD_LEVEL], price, size, touched)
                if u < 0:
                    stats[S_REJECTED] += 1
                    continue
                if mbo or ((book & 1) and not merge):
                    continue
                side = _BID if book < 2 else _ASK
                for j in range(u):
                    p = touched[j]
                    n = _emit(out_w, out_f, row_slot, n, ts, p, float(_size_at(px, sz, cnt, s, book, p, merge)), seq,
                              iid, _BOOK_KIND, side, 0, s)
        if keep_mbo:
            lo, hi = m_ent[m, 0], m_ent[m, 1]
            for k in range(m_ord[m, 0], m_ord[m, 1]):
                ref = od[k, OD_REF]
                if ref < 0:  # 47: the order names its own instrument, side and price
                    s, etype, p = od[k, OD_SLOT], od[k, OD_TYPE], od[k, OD_PX]
                else:  # 46: from the MD entry ReferenceID names
                    if ref == _UINT8_NULL or ref < 1 or ref > hi - lo:
                        stats[S_REJECTED] += 1
                        continue
                    j = lo + ref - 1
                    s, etype, p = md[j, MD_SLOT], md[j, MD_TYPE], md[j, MD_PX]
                action = od[k, OD_ACTION]
                if seq <= inst[s, I_ORDER_SEQ]:
                    continue  # the instrument's order snapshot holds it
                side = _BID if etype == _CHAR_BID else (_ASK if etype == _CHAR_ASK else 0)
                if side == 0 or (p == _PRICE_NULL and action != DELETE) or (p != _PRICE_NULL and not _fits(p, scale)):
                    stats[S_REJECTED] += 1
                    continue
                qty = od[k, OD_QTY]
                u = _apply_order(orders, totals, inst, action, od[k, OD_ID], s, side, 0 if p == _PRICE_NULL else p * scale,
                                 0 if qty == _INT32_NULL else qty, t_side, t_price)
                if u < 0:
                    stats[S_REJECTED] += 1
                    continue
                iid = inst[s, I_IID]
                if iid and mbo:
                    for j in range(u):
                        n = _emit(out_w, out_f, row_slot, n, ts, t_price[j],
                                  float(_total(totals, (s, t_side[j], t_price[j]))), seq, iid, _BOOK_KIND, t_side[j], 0,
                                  s)
        if m_mei[m] & END_OF_EVENT:
            _end_event(out_w, row_slot, ev_start, n, mark, stamp)
            stamp += 1
            ev_start = n
    return n, ev_start, n_gaps


@numba.njit(cache=True, nogil=True)
def rebuild_levels(inst, stats, px, sz, cnt, depth, slot, types_, levels, prices, sizes):
    """Replace one instrument's level books with a snapshot's entries (prices already in 1e-9;
    an entry out of level order, past the depth or without a price is left out)."""
    for b in range(4):
        cnt[slot, b] = 0
    make_book(inst, stats, slot)
    for k in range(types_.shape[0]):
        book = _entry_book(types_[k])
        if book < 0 or levels[k] == 127 or prices[k] == _PRICE_NULL:
            continue
        n = cnt[slot, book]
        if levels[k] - 1 == n and n < depth:
            px[slot, book, n] = prices[k]
            sz[slot, book, n] = sizes[k]
            cnt[slot, book] = n + 1


@numba.njit(cache=True, nogil=True)
def book_published(px, sz, cnt, slot, merge):
    """Every published level of one instrument: (sides, prices, sizes), bids then asks."""
    most = 4 * px.shape[2]
    sides, prices, sizes = np.empty(most, np.int64), np.empty(most, np.int64), np.empty(most, np.int64)
    n = 0
    for side in (_BID, _ASK):
        first = n  # this side's prices start here
        outright = 2 * (side - 1)
        for b in (outright, outright + 1):
            if b & 1 and not merge:
                continue
            for i in range(cnt[slot, b]):
                p = px[slot, b, i]
                if p in prices[first:n]:
                    continue
                sides[n], prices[n], sizes[n] = side, p, _size_at(px, sz, cnt, slot, b, p, merge)
                n += 1
    return sides[:n], prices[:n], sizes[:n]


@numba.njit(cache=True, nogil=True)
def add_orders(orders, totals, inst, slot, ids, types_, prices, qtys):
    """Add a snapshot's orders to one instrument; returns how many did not fit (no side, or an
    OrderID already resting)."""
    bad = 0
    for k in range(ids.shape[0]):
        side = _BID if types_[k] == _CHAR_BID else (_ASK if types_[k] == _CHAR_ASK else 0)
        if side == 0 or ids[k] in orders:
            bad += 1
            continue
        _order_add(orders, totals, inst, ids[k], slot, side, prices[k], qtys[k])
    return bad


@numba.njit(cache=True, nogil=True)
def order_levels(totals, slot):
    """(sides, prices, totals) of one instrument's levels, in the order they were first made."""
    sides, prices, sizes = [], [], []
    for key, total in totals.items():
        if key[0] == slot:
            sides.append(key[1])
            prices.append(key[2])
            sizes.append(total)
    return np.array(sides, np.int64), np.array(prices, np.int64), np.array(sizes, np.int64)


@numba.njit(cache=True, nogil=True)
def order_rows(orders):
    """Every resting order as rows (OrderID, slot, side, price, quantity), in arrival order."""
    out = np.empty((len(orders), 5), np.int64)
    i = 0
    for order_id, order in orders.items():
        out[i, 0] = order_id
        out[i, 1], out[i, 2], out[i, 3], out[i, 4] = order
        i += 1
    return out
