"""Market-by-order book state: turns DBN MBO events into price-level updates.

A vendor that sends individual orders (Databento MBO, "L3") is normalized into the one
record layout by keeping every resting order (order id -> side, price, size) and the total
size of every price level, and emitting one `Kind.BOOK` record per level whose total changed.
Workers then only need a price-level book.

Semantics (Databento MBO normalization, checked against its docs and the sample data):

- ``A`` add: a new order; its level grows by ``size``.
- ``C`` cancel: ``size`` is the quantity cancelled (full or partial); the order shrinks by it
  and leaves the book at 0. The stored price/side of the order are used, not the record's.
- ``M`` modify: ``price``/``size`` are the order's new values; a price or side change moves
  the order (two level updates). A modify of an unknown order is treated as an add.
- ``R`` clear: every order and level of the instrument is dropped; one `Kind.RESET` record.
- ``T`` trade: one `Kind.TRADE` record (side = aggressor). ``F`` fill and ``N`` none: nothing.
  Trades and fills never change the book: the cancels/modifies that follow them do.

State lives in open-addressing hash tables (linear probing, backward-shift deletion) in
numpy arrays, updated by one numba loop per batch: no Python object per order.
Books are keyed by vendor instrument id only (not publisher); top-of-book-only venues
(records flagged ``F_TOB``) are not supported and are counted as ``mbo_tob``.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.records import RECORD_DTYPE, Kind, Side

__all__ = ["MboBook", "MBO_ANOMALIES"]

MBO_ANOMALIES = (
    "mbo_unknown_order",
    "mbo_cancel_exceeds",
    "mbo_duplicate_add",
    "mbo_modify_unknown",
    "mbo_bad_action",
    "mbo_bad_side",
    "mbo_tob",
)
"""Names of the counters `MboBook.apply` returns, in order."""

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


# --- order table: keys[cap, 3] = (hash, order_id, instrument_id), vals[cap, 3] = (side, price, size)


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _l_find(keys, iidside, pbits, h):
    mask = keys.shape[0] - 1
    i = np.int64((h >> np.uint64(8)) & np.uint64(mask))
    while keys[i, 0] != 0:
        if keys[i, 0] == h and keys[i, 1] == iidside and keys[i, 2] == pbits:
            return i
        i = (i + 1) & mask
    return -1 - i


@numba.njit(cache=True)
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
def _rehash(keys, vals, new_keys, new_vals, drop_iid, iid_col, iid_div):
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
def _emit(ow, of, n, ts_event, ts_recv, price, size, seq, iid, kind, side, flags):
    ow[n, 0] = np.uint64(ts_event)
    ow[n, 1] = np.uint64(ts_recv)
    ow[n, 2] = np.uint64(price)
    ow[n, 3] = np.uint64(0)
    of[n, 4] = size
    of[n, 5] = 0.0
    ow[n, 6] = np.uint64(seq)
    ow[n, 7] = (
        np.uint64(iid)
        | (np.uint64(kind) << np.uint64(32))
        | (np.uint64(side) << np.uint64(40))
        | (np.uint64(flags) << np.uint64(48))
    )


@numba.njit(cache=True)
def _apply(
    okeys, ovals, lkeys, lvals, counts, start, iid, oid, price, size, action, side, flags,
    ts_event, ts_recv, seq, ow, of, src, nout, stats,
):
    """Apply MBO events from `start`; stop early (returning the index) when a table is half full."""
    ocap_half = okeys.shape[0] // 2
    lcap_half = lkeys.shape[0] // 2
    n = nout
    for r in range(start, iid.shape[0]):
        if counts[0] + 1 > ocap_half or counts[1] + 2 > lcap_half:
            return r, n
        a = action[r]
        s = side[r]
        fl = flags[r] & _FLAG_MASK
        sd = 0
        if s == 66:  # 'B'
            sd = _BID
        elif s == 65:  # 'A'
            sd = _ASK
        elif s != 78:  # not 'N'
            stats[5] += 1
            continue
        ins = iid[r]
        if a == _T:
            _emit(ow, of, n, ts_event[r], ts_recv[r], price[r], np.float64(size[r]), seq[r], ins, _TRADE, sd, fl)
            src[n] = r
            n += 1
            continue
        if a == _F or a == _N:
            continue
        if a == _R:
            drop = np.int64(ins)
            nk = np.zeros_like(okeys)
            nv = np.zeros_like(ovals)
            counts[0] = _rehash(okeys, ovals, nk, nv, drop, 2, 1)
            okeys[:] = nk
            ovals[:] = nv
            lk = np.zeros_like(lkeys)
            lv = np.zeros_like(lvals)
            counts[1] = _rehash(lkeys, lvals, lk, lv, drop, 1, 4)
            lkeys[:] = lk
            lvals[:] = lv
            _emit(ow, of, n, ts_event[r], ts_recv[r], 0, 0.0, seq[r], ins, _RESET, 0, fl)
            src[n] = r
            n += 1
            continue
        if a != _A and a != _C and a != _M:
            stats[4] += 1
            continue
        if flags[r] & _F_TOB:
            stats[6] += 1
            continue
        o = np.uint64(oid[r])
        h = _mix(o ^ (np.uint64(ins) * _GOLD))
        i = _o_find(okeys, o, np.uint64(ins), h)
        if a == _C:
            if i < 0:
                stats[0] += 1
                continue
            osd = ovals[i, 0]
            opx = ovals[i, 1]
            qty = np.int64(size[r])
            if qty > ovals[i, 2]:
                stats[1] += 1
                qty = ovals[i, 2]
            if qty == 0:
                continue
            left = ovals[i, 2] - qty
            if left == 0:
                _delete(okeys, ovals, i)
                counts[0] -= 1
            else:
                ovals[i, 2] = left
            tot = _level_add(lkeys, lvals, counts, ins, osd, opx, -qty)
            _emit(ow, of, n, ts_event[r], ts_recv[r], opx, np.float64(tot), seq[r], ins, _BOOK, osd, fl)
            src[n] = r
            n += 1
            continue
        if sd == 0:
            stats[5] += 1
            continue
        new_px = price[r]
        new_sz = np.int64(size[r])
        if i >= 0:
            if a == _A:
                stats[2] += 1
            osd = ovals[i, 0]
            opx = ovals[i, 1]
            osz = ovals[i, 2]
            if osd == sd and opx == new_px:
                # same level: only the size changes
                delta = new_sz - osz
                tot = _level_add(lkeys, lvals, counts, ins, sd, new_px, delta)
                if new_sz == 0:
                    _delete(okeys, ovals, i)
                    counts[0] -= 1
                else:
                    ovals[i, 2] = new_sz
                _emit(ow, of, n, ts_event[r], ts_recv[r], new_px, np.float64(tot), seq[r], ins, _BOOK, sd, fl)
                src[n] = r
                n += 1
                continue
            # the order moves: leave the old level (not the last record of the event)
            tot = _level_add(lkeys, lvals, counts, ins, osd, opx, -osz)
            _emit(ow, of, n, ts_event[r], ts_recv[r], opx, np.float64(tot), seq[r], ins, _BOOK, osd, fl & ~_F_LAST)
            src[n] = r
            n += 1
            if new_sz == 0:
                _delete(okeys, ovals, i)
                counts[0] -= 1
                continue
            ovals[i, 0] = sd
            ovals[i, 1] = new_px
            ovals[i, 2] = new_sz
        else:
            if a == _M:
                stats[3] += 1
            if new_sz == 0:
                continue
            j = -1 - i
            okeys[j, 0] = h
            okeys[j, 1] = o
            okeys[j, 2] = np.uint64(ins)
            ovals[j, 0] = sd
            ovals[j, 1] = new_px
            ovals[j, 2] = new_sz
            counts[0] += 1
        tot = _level_add(lkeys, lvals, counts, ins, sd, new_px, new_sz)
        _emit(ow, of, n, ts_event[r], ts_recv[r], new_px, np.float64(tot), seq[r], ins, _BOOK, sd, fl)
        src[n] = r
        n += 1
    return iid.shape[0], n


@numba.njit(cache=True)
def _levels_of(lkeys, lvals, iid, side, out_px, out_sz):
    n = 0
    want = np.uint64(iid) * np.uint64(4) + np.uint64(side)
    for i in range(lkeys.shape[0]):
        if lkeys[i, 0] != 0 and lkeys[i, 1] == want:
            out_px[n] = np.int64(lkeys[i, 2])
            out_sz[n] = lvals[i, 0]
            n += 1
    return n


class MboBook:
    """Per-instrument order and level state of an MBO stream; `apply` one batch at a time.

    The tables grow (doubling) whenever they pass half full, so memory follows the number
    of resting orders, not the number of events.
    """

    def __init__(self, *, capacity: int = 1 << 12):
        cap = 1 << max(4, (int(capacity) - 1).bit_length())
        self._okeys = np.zeros((cap, 3), np.uint64)
        self._ovals = np.zeros((cap, 3), np.int64)
        self._lkeys = np.zeros((cap, 3), np.uint64)
        self._lvals = np.zeros((cap, 1), np.int64)
        self._counts = np.zeros(2, np.int64)  # resting orders, levels

    @property
    def orders(self) -> int:
        """Number of resting orders over all instruments."""
        return int(self._counts[0])

    @property
    def levels(self) -> int:
        """Number of non-empty price levels over all instruments."""
        return int(self._counts[1])

    def apply(
        self,
        *,
        instrument_id: np.ndarray,
        order_id: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        action: np.ndarray,
        side: np.ndarray,
        flags: np.ndarray,
        ts_event: np.ndarray,
        ts_recv: np.ndarray,
        sequence: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Apply a batch of MBO events (parallel arrays, DBN field types; `action`/`side` as
        uint8 ASCII codes) in order.

        Returns ``(records, source, anomalies)``: the emitted `RECORD_DTYPE` records (with the
        vendor instrument id), for each record the index of the event that produced it, and
        counters of events inconsistent with the book state (see `MBO_ANOMALIES`).
        """
        n = len(instrument_id)
        out = np.zeros(2 * n, dtype=RECORD_DTYPE)
        ow = out.view(np.uint64).reshape(-1, 8)
        of = out.view(np.float64).reshape(-1, 8)
        src = np.empty(2 * n, np.int64)
        stats = np.zeros(len(MBO_ANOMALIES), np.int64)
        args = (
            np.ascontiguousarray(instrument_id, np.uint32),
            np.ascontiguousarray(order_id, np.uint64),
            np.ascontiguousarray(price, np.int64),
            np.ascontiguousarray(size, np.uint32),
            np.ascontiguousarray(action, np.uint8),
            np.ascontiguousarray(side, np.uint8),
            np.ascontiguousarray(flags, np.uint8),
            np.ascontiguousarray(ts_event, np.int64),
            np.ascontiguousarray(ts_recv, np.int64),
            np.ascontiguousarray(sequence, np.uint64),
        )
        start, nout = 0, 0
        while True:
            start, nout = _apply(
                self._okeys, self._ovals, self._lkeys, self._lvals, self._counts, start, *args,
                ow, of, src, nout, stats,
            )
            if start >= n:
                break
            self._grow()
        anomalies = {name: int(v) for name, v in zip(MBO_ANOMALIES, stats, strict=True) if v}
        return out[:nout], src[:nout], anomalies

    def _grow(self) -> None:
        """Double whichever table is at least half full."""
        if (self._counts[0] + 1) > self._okeys.shape[0] // 2:
            cap = self._okeys.shape[0] * 2
            nk, nv = np.zeros((cap, 3), np.uint64), np.zeros((cap, 3), np.int64)
            self._counts[0] = _rehash(self._okeys, self._ovals, nk, nv, -1, 2, 1)
            self._okeys, self._ovals = nk, nv
        if (self._counts[1] + 2) > self._lkeys.shape[0] // 2:
            cap = self._lkeys.shape[0] * 2
            nk, nv = np.zeros((cap, 3), np.uint64), np.zeros((cap, 1), np.int64)
            self._counts[1] = _rehash(self._lkeys, self._lvals, nk, nv, -1, 1, 4)
            self._lkeys, self._lvals = nk, nv

    def levels_of(self, instrument_id: int, side: Side) -> list[tuple[int, int]]:
        """All ``(price, total size)`` levels of one side, best first (for tests and snapshots)."""
        px = np.empty(self._lkeys.shape[0], np.int64)
        sz = np.empty(self._lkeys.shape[0], np.int64)
        n = _levels_of(self._lkeys, self._lvals, int(instrument_id), int(side), px, sz)
        pairs = sorted(zip(px[:n].tolist(), sz[:n].tolist(), strict=True), reverse=(side == Side.BID))
        return pairs
