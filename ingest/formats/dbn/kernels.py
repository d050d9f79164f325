"""Numba kernels: DBN record framing, one fused pass from raw record bytes to streamctl
records (trades, mbp-1/tbbo, mbo) and the MBO book's hash tables.

They live in ONE module on purpose: numba's on-disk cache (``cache=True``) checks only the
timestamp of the file that defines a function, and a cached function embeds the code of the
functions it calls, so kernels split across modules could run stale code after an upgrade.

The Python side only handles the rare record types that produce no records (mappings,
system, error, skipped or unknown types), whose indices the pass collects.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.records import Kind, Side

__all__ = [
    "frame", "convert", "apply_mbo", "rehash", "levels_of",
    "STAT_MALFORMED", "STAT_NOT_TRADE", "N_STATS", "MBO_ANOMALIES",
]

MBO_ANOMALIES = (
    "mbo_unknown_order",
    "mbo_cancel_exceeds",
    "mbo_duplicate_add",
    "mbo_modify_unknown",
    "mbo_tob",
    "mbo_no_side",
)
"""Counters of well-formed MBO events that do not fit the book state, in `stats` order
(``mbo_no_side``: an add/modify with side ``N``)."""

_A, _C, _M, _R, _T, _F, _N = (ord(c) for c in "ACMRTFN")
_FLAG_MASK = 0x80 | 0x20 | 0x08  # F_LAST, F_SNAPSHOT, F_BAD_TS_RECV: same bits as our Flag
_F_LAST = 0x80
_F_TOB = 0x40
_BOOK, _TRADE, _RESET = int(Kind.BOOK), int(Kind.TRADE), int(Kind.RESET)
_BID, _ASK = int(Side.BID), int(Side.ASK)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_ONE = np.uint64(1)


@numba.njit(cache=True, inline="always")
def _mix(x):
    """splitmix64 finalizer: a cheap, well-spread 64-bit hash; never 0 (0 marks empty)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    x = x ^ (x >> _S31)
    return x | _ONE


# --- order table: one row per order, keys[cap, 6] = (hash, order_id, instrument_id, side, price, size);
# its `vals` table has no columns. Level table: keys[cap, 3] = (hash, instrument*4+side, price), vals[cap, 1] = size.


@numba.njit(cache=True, inline="always")
def _o_find(keys, oid, iid, h):
    mask = keys.shape[0] - 1
    i = np.int64((h >> np.uint64(8)) & np.uint64(mask))
    while keys[i, 0] != 0:
        if keys[i, 0] == h and keys[i, 1] == oid and keys[i, 2] == iid:
            return i
        i = (i + 1) & mask
    return -1 - i  # free slot, encoded


@numba.njit(cache=True)
def _delete(keys, vals, i):
    """Backward-shift deletion for linear probing (no tombstones)."""
    mask = keys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        if keys[j, 0] == 0:
            break
        k = np.int64((keys[j, 0] >> np.uint64(8)) & np.uint64(mask))
        if i <= j:
            stay = i < k <= j
        else:
            stay = k > i or k <= j
        if stay:
            continue
        for c in range(keys.shape[1]):
            keys[i, c] = keys[j, c]
        for c in range(vals.shape[1]):
            vals[i, c] = vals[j, c]
        i = j
    keys[i, 0] = 0


@numba.njit(cache=True, inline="always")
def _l_find(keys, iidside, pbits, h):
    mask = keys.shape[0] - 1
    i = np.int64((h >> np.uint64(8)) & np.uint64(mask))
    while keys[i, 0] != 0:
        if keys[i, 0] == h and keys[i, 1] == iidside and keys[i, 2] == pbits:
            return i
        i = (i + 1) & mask
    return -1 - i


@numba.njit(cache=True, inline="always")
def _level_add(lkeys, lvals, counts, iid, side, price, delta):
    """Add `delta` to a level; returns the new total (the level is removed at <= 0)."""
    iidside = np.uint64(iid) * np.uint64(4) + np.uint64(side)
    pbits = np.uint64(price)
    h = _mix(pbits ^ (iidside * _GOLD))
    i = _l_find(lkeys, iidside, pbits, h)
    if i < 0:
        if delta <= 0:
            return 0
        i = -1 - i
        lkeys[i, 0] = h
        lkeys[i, 1] = iidside
        lkeys[i, 2] = pbits
        lvals[i, 0] = delta
        counts[1] += 1
        return delta
    total = lvals[i, 0] + delta
    if total <= 0:
        _delete(lkeys, lvals, i)
        counts[1] -= 1
        return 0
    lvals[i, 0] = total
    return total


@numba.njit(cache=True)
def rehash(keys, vals, new_keys, new_vals, drop_iid, iid_col, iid_div):
    """Copy every entry into the new (empty) tables, dropping instrument `drop_iid` (-1: none)."""
    mask = new_keys.shape[0] - 1
    n = 0
    for s in range(keys.shape[0]):
        h = keys[s, 0]
        if h == 0:
            continue
        if drop_iid >= 0 and np.int64(keys[s, iid_col] // np.uint64(iid_div)) == drop_iid:
            continue
        i = np.int64((h >> np.uint64(8)) & np.uint64(mask))
        while new_keys[i, 0] != 0:
            i = (i + 1) & mask
        for c in range(keys.shape[1]):
            new_keys[i, c] = keys[s, c]
        for c in range(vals.shape[1]):
            new_vals[i, c] = vals[s, c]
        n += 1
    return n


@numba.njit(cache=True)
def _drop(keys, vals, iid, iid_col, iid_div):
    """Delete every entry of instrument `iid` in place (one pass; a slot refilled by the
    backward shift is checked again). Returns how many were deleted."""
    cap = keys.shape[0]
    victims = 0
    used = 0
    for i in range(cap):
        if keys[i, 0] != 0:
            used += 1
            if keys[i, iid_col] // iid_div == iid:
                victims += 1
    if victims == used:  # the only instrument: empty the table without shifting
        for i in range(cap):
            keys[i, 0] = 0
        return victims
    gone = 0
    i = 0
    while i < cap:
        if keys[i, 0] != 0 and keys[i, iid_col] // iid_div == iid:
            _delete(keys, vals, i)
            gone += 1
        else:
            i += 1
    return gone


@numba.njit(cache=True, inline="always")
def emit(ow, of, n, ts_event, ts_recv, price, price2, size, size2, seq, iid, kind, side, flags):
    """Write record `n` through 8-byte word views of a `RECORD_DTYPE` array (every byte)."""
    ow[n, 0] = np.uint64(ts_event)
    ow[n, 1] = np.uint64(ts_recv)
    ow[n, 2] = np.uint64(price)
    ow[n, 3] = np.uint64(price2)
    of[n, 4] = size
    of[n, 5] = size2
    ow[n, 6] = np.uint64(seq)
    ow[n, 7] = (
        np.uint64(iid)
        | (np.uint64(kind) << np.uint64(32))
        | (np.uint64(side) << np.uint64(40))
        | (np.uint64(flags) << np.uint64(48))
    )


@numba.njit(cache=True, inline="always")
def side_code(s):
    """DBN side byte -> our Side; 255 when not A/B/N."""
    if s == 66:  # 'B'
        return _BID
    if s == 65:  # 'A'
        return _ASK
    if s == 78:  # 'N'
        return 0
    return 255


@numba.njit(cache=True, inline="always")
def valid_action(a):
    return a == _A or a == _C or a == _M or a == _R or a == _T or a == _F or a == _N


@numba.njit(cache=True, inline="always")
def has_room(okeys, lkeys, counts):
    """Whether one more event fits below half load (the caller grows the tables otherwise)."""
    return counts[0] + 1 <= okeys.shape[0] // 2 and counts[1] + 2 <= lkeys.shape[0] // 2


@numba.njit(cache=True, inline="always")
def step(okeys, ovals, lkeys, lvals, counts, stats, ins, oid, price, size, a, sd, flags,
         ts_event, ts_recv, seq, ow, of, n):
    """Apply one valid MBO event (`a` ASCII action, `sd` our Side); returns the new output count."""
    fl = flags & _FLAG_MASK
    if a == _T:
        emit(ow, of, n, ts_event, ts_recv, price, 0, np.float64(size), 0.0, seq, ins, _TRADE, sd, fl)
        return n + 1
    if a == _F or a == _N:
        return n
    if a == _R:
        counts[0] -= _drop(okeys, ovals, np.uint64(ins), 2, np.uint64(1))
        counts[1] -= _drop(lkeys, lvals, np.uint64(ins), 1, np.uint64(4))
        emit(ow, of, n, ts_event, ts_recv, 0, 0, 0.0, 0.0, seq, ins, _RESET, 0, fl)
        return n + 1
    if flags & _F_TOB:
        stats[4] += 1
        return n
    o = np.uint64(oid)
    h = _mix(o ^ (np.uint64(ins) * _GOLD))
    i = _o_find(okeys, o, np.uint64(ins), h)
    if a == _C:
        if i < 0:
            stats[0] += 1
            return n
        osd = np.int64(okeys[i, 3])
        opx = np.int64(okeys[i, 4])
        osz = np.int64(okeys[i, 5])
        qty = np.int64(size)
        if qty > osz:
            stats[1] += 1
            qty = osz
        if qty == 0:
            return n
        left = osz - qty
        if left == 0:
            _delete(okeys, ovals, i)
            counts[0] -= 1
        else:
            okeys[i, 5] = np.uint64(left)
        tot = _level_add(lkeys, lvals, counts, ins, osd, opx, -qty)
        emit(ow, of, n, ts_event, ts_recv, opx, 0, np.float64(tot), 0.0, seq, ins, _BOOK, osd, fl)
        return n + 1
    if sd == 0:  # an add/modify must have a side
        stats[5] += 1
        return n
    new_sz = np.int64(size)
    if i >= 0:
        if a == _A:
            stats[2] += 1
        osd = np.int64(okeys[i, 3])
        opx = np.int64(okeys[i, 4])
        osz = np.int64(okeys[i, 5])
        if osd == sd and opx == price:  # same level: only the size changes
            tot = _level_add(lkeys, lvals, counts, ins, sd, price, new_sz - osz)
            if new_sz == 0:
                _delete(okeys, ovals, i)
                counts[0] -= 1
            else:
                okeys[i, 5] = np.uint64(new_sz)
            emit(ow, of, n, ts_event, ts_recv, price, 0, np.float64(tot), 0.0, seq, ins, _BOOK, sd, fl)
            return n + 1
        # the order moves: leave the old level first (not the last record of the event)
        tot = _level_add(lkeys, lvals, counts, ins, osd, opx, -osz)
        emit(ow, of, n, ts_event, ts_recv, opx, 0, np.float64(tot), 0.0, seq, ins, _BOOK, osd, fl & ~_F_LAST)
        n += 1
        if new_sz == 0:
            _delete(okeys, ovals, i)
            counts[0] -= 1
            return n
        okeys[i, 3] = np.uint64(sd)
        okeys[i, 4] = np.uint64(price)
        okeys[i, 5] = np.uint64(new_sz)
    else:
        if a == _M:
            stats[3] += 1
        if new_sz == 0:
            return n
        j = -1 - i
        okeys[j, 0] = h
        okeys[j, 1] = o
        okeys[j, 2] = np.uint64(ins)
        okeys[j, 3] = np.uint64(sd)
        okeys[j, 4] = np.uint64(price)
        okeys[j, 5] = np.uint64(new_sz)
        counts[0] += 1
    tot = _level_add(lkeys, lvals, counts, ins, sd, price, new_sz)
    emit(ow, of, n, ts_event, ts_recv, price, 0, np.float64(tot), 0.0, seq, ins, _BOOK, sd, fl)
    return n + 1


@numba.njit(cache=True)
def apply_mbo(okeys, ovals, lkeys, lvals, counts, stats, start, iid, oid, price, size, action, side, flags,
           ts_event, ts_recv, seq, ow, of, src, nout):
    """Apply events from `start`; returns (next index, outputs) early when the tables need to grow."""
    n = nout
    for r in range(start, iid.shape[0]):
        if not has_room(okeys, lkeys, counts):
            return r, n
        sd = side_code(side[r])
        if sd == 255 or not valid_action(action[r]):
            stats[6] += 1
            continue
        m = step(okeys, ovals, lkeys, lvals, counts, stats, iid[r], oid[r], price[r], size[r], action[r], sd,
                 flags[r], ts_event[r], ts_recv[r], seq[r], ow, of, n)
        for j in range(n, m):
            src[j] = r
        n = m
    return iid.shape[0], n


@numba.njit(cache=True)
def levels_of(lkeys, lvals, iid, side, out_px, out_sz):
    n = 0
    want = np.uint64(iid) * np.uint64(4) + np.uint64(side)
    for i in range(lkeys.shape[0]):
        if lkeys[i, 0] != 0 and lkeys[i, 1] == want:
            out_px[n] = np.int64(lkeys[i, 2])
            out_sz[n] = lvals[i, 0]
            n += 1
    return n


_QUOTE = int(Kind.QUOTE)

# stats slots: 0..5 = mbo_book.MBO_ANOMALIES, then ours
STAT_MALFORMED = 6
"""An action or side byte that is not one of DBN's."""
STAT_NOT_TRADE = 7
"""A trades-schema (rtype 0x00) record whose action is not ``T``."""
N_STATS = 8


@numba.njit(cache=True)
def frame(buf, sizes, offsets, rtypes, resyncing):
    """Walk records by their length byte. Returns (n records, bytes consumed, corrupt regions,
    still resyncing). A header whose length disagrees with its known rtype starts a resync:
    the next offset with a known rtype and length followed by another plausible header (or
    the end of the buffer); an unknown rtype is framed by its length only when the header
    after it is plausible."""
    end = buf.shape[0]
    pos = 0
    n = 0
    bad = 0
    while pos + 2 <= end:
        length = np.int64(buf[pos]) * 4
        rt = buf[pos + 1]
        want = sizes[rt]
        ok = length >= 16 and (want == 0 or want == length)
        if ok and want == 0 and resyncing:
            ok = False  # resync only on known record types
        elif ok and want == 0:
            nxt = pos + length
            if nxt + 2 <= end:
                nl = np.int64(buf[nxt]) * 4
                ok = sizes[buf[nxt + 1]] == nl and nl >= 16
        if not ok:
            if not resyncing:
                bad += 1
                resyncing = True
            pos += 1
            continue
        if resyncing:
            nxt = pos + length
            if nxt + 2 <= end:
                nl = np.int64(buf[nxt]) * 4
                if not (sizes[buf[nxt + 1]] == nl and nl >= 16):
                    pos += 1
                    continue
        if pos + length > end:
            break
        resyncing = False
        offsets[n] = pos
        rtypes[n] = rt
        n += 1
        pos += length
    return n, pos, bad, resyncing


@numba.njit(cache=True, inline="always")
def _w(w64, p):
    """The u64 at byte `p` (a multiple of 8): records start 8-byte aligned (the decoder
    realigns otherwise) and every DBN field of 8 bytes sits at a multiple of 8 in its record."""
    return w64[p >> 3]


@numba.njit(cache=True, inline="always")
def _lo(w64, p):
    """The u32 at byte `p` (a multiple of 8): the low half of its word."""
    return np.uint32(w64[p >> 3] & np.uint64(0xFFFFFFFF))


@numba.njit(cache=True, inline="always")
def _hi(w64, p):
    """The u32 at byte `p` (4 past a multiple of 8): the high half of its word."""
    return np.uint32(w64[p >> 3] >> np.uint64(32))


@numba.njit(cache=True)
def _mbo_run(b, w64, offsets, start, end, now, okeys, ovals, lkeys, lvals, counts, stats, ow, of, nout):
    """MBO records [start, end) through the book; stops early when the tables must grow."""
    for k in range(start, end):
        if not has_room(okeys, lkeys, counts):
            return k, nout
        p = offsets[k]
        a = b[p + 38]
        sd = side_code(b[p + 39])
        if sd == 255 or not valid_action(a):
            stats[STAT_MALFORMED] += 1
            continue
        ts_recv = now if now != 0 else np.int64(_w(w64, p + 40))
        nout = step(okeys, ovals, lkeys, lvals, counts, stats, _hi(w64, p), _w(w64, p + 16),
                    np.int64(_w(w64, p + 24)), _lo(w64, p + 32), a, sd, b[p + 36], np.int64(_w(w64, p + 8)),
                    ts_recv, _hi(w64, p + 48), ow, of, nout)
    return end, nout


@numba.njit(cache=True)
def _trade_run(b, w64, offsets, start, end, now, rt, tbbo, stats, ow, of, nout):
    """Trades (rt 0) or mbp-1/tbbo (rt 1) records [start, end)."""
    for k in range(start, end):
        p = offsets[k]
        a = b[p + 28]
        sd = side_code(b[p + 29])
        if sd == 255 or not valid_action(a):
            stats[STAT_MALFORMED] += 1
            continue
        iid = _hi(w64, p)
        ts_event = np.int64(_w(w64, p + 8))
        ts_recv = now if now != 0 else np.int64(_w(w64, p + 32))
        seq = _hi(w64, p + 40)
        fl = b[p + 30] & _FLAG_MASK
        trade = a == _T
        if rt == 0:
            if trade:
                emit(ow, of, nout, ts_event, ts_recv, np.int64(_w(w64, p + 16)), 0,
                     np.float64(_lo(w64, p + 24)), 0.0, seq, iid, _TRADE, sd, fl)
                nout += 1
            else:
                stats[STAT_NOT_TRADE] += 1
            continue
        if trade and not tbbo:
            emit(ow, of, nout, ts_event, ts_recv, np.int64(_w(w64, p + 16)), 0,
                 np.float64(_lo(w64, p + 24)), 0.0, seq, iid, _TRADE, sd, fl)
            nout += 1
        emit(ow, of, nout, ts_event, ts_recv, np.int64(_w(w64, p + 48)), np.int64(_w(w64, p + 56)),
             np.float64(_lo(w64, p + 64)), np.float64(_hi(w64, p + 64)), seq, iid, _QUOTE, 0, fl)
        nout += 1
        if trade and tbbo:
            emit(ow, of, nout, ts_event, ts_recv, np.int64(_w(w64, p + 16)), 0,
                 np.float64(_lo(w64, p + 24)), 0.0, seq, iid, _TRADE, sd, fl)
            nout += 1
    return nout


@numba.njit(cache=True)
def convert(b, w64, offsets, rtypes, start, nrec, now, tbbo, okeys, ovals, lkeys, lvals, counts, stats,
            ow, of, nout, other, nother):
    """Convert framed records from `start`, one run of same-type records at a time (tight
    loops per type). Returns (next record, outputs, others); stops early (next record < nrec)
    when the book tables must grow before an MBO event. `w64` is the u64 view of `b`, which
    must start 8-byte aligned, with every offset a multiple of 8."""
    k = start
    while k < nrec:
        rt = rtypes[k]
        j = k + 1
        while j < nrec and rtypes[j] == rt:
            j += 1
        if rt == 0xA0:
            stop, nout = _mbo_run(b, w64, offsets, k, j, now, okeys, ovals, lkeys, lvals, counts, stats,
                                  ow, of, nout)
            if stop < j:
                return stop, nout, nother
        elif rt == 0x00 or rt == 0x01:
            nout = _trade_run(b, w64, offsets, k, j, now, rt, tbbo, stats, ow, of, nout)
        else:
            for q in range(k, j):
                other[nother] = q
                nother += 1
        k = j
    return nrec, nout, nother
