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

from streamctl.ingest.formats.dbn.constants import F_LAST, F_TOB, FLAGS_KEPT, RType
from streamctl.shm.records import Kind, Side

__all__ = [
    "frame", "convert", "apply_mbo", "rehash", "levels_of", "remap",
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

# Plain ints: numba freezes globals at compile time, and its cache is keyed on THIS file only,
# so these DBN values (fixed by the specification) must never change under a cached kernel.
_ADD, _CANCEL, _MODIFY, _CLEAR, _TRADE_ACTION, _FILL, _NONE = (ord(c) for c in "ACMRTFN")
_RT_TRADES, _RT_MBP_1, _RT_MBO = int(RType.MBP_0), int(RType.MBP_1), int(RType.MBO)
_BOOK, _TRADE, _RESET, _QUOTE = int(Kind.BOOK), int(Kind.TRADE), int(Kind.RESET), int(Kind.QUOTE)
_BID, _ASK = int(Side.BID), int(Side.ASK)
_NO_SIDE = 255
"""`side_code` of a byte that is not a DBN side."""

# stats slots: 0..5 = MBO_ANOMALIES, then the decoder's own
_STAT_UNKNOWN_ORDER, _STAT_CANCEL_EXCEEDS, _STAT_DUPLICATE_ADD, _STAT_MODIFY_UNKNOWN, _STAT_TOB, _STAT_NO_SIDE = range(6)
STAT_MALFORMED = 6
"""An action or side byte that is not one of DBN's."""
STAT_NOT_TRADE = 7
"""A trades-schema (rtype 0x00) record whose action is not ``T``."""
N_STATS = 8

_MIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MUL2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT30, _SHIFT27, _SHIFT31 = np.uint64(30), np.uint64(27), np.uint64(31)
_ONE = np.uint64(1)
_SLOT_SHIFT = np.uint64(8)
"""A key's home slot comes from its hash above the low byte."""
_LEVEL_SIDES = np.uint64(4)
"""A level's owner is ``instrument * 4 + side``."""


@numba.njit(cache=True, inline="always")
def _mix(x):
    """splitmix64 finalizer: a cheap, well-spread 64-bit hash; never 0 (0 marks empty)."""
    x = (x ^ (x >> _SHIFT30)) * _MIX_MUL1
    x = (x ^ (x >> _SHIFT27)) * _MIX_MUL2
    x = x ^ (x >> _SHIFT31)
    return x | _ONE


# --- Book tables (open addressing, linear probing). Order table: order_keys[cap, 6] =
# (hash, order_id, instrument_id, side, price, size); its `order_vals` has no columns. Level
# table: level_keys[cap, 3] = (hash, instrument*4+side, price), level_vals[cap, 1] = total size.
# Both are looked up by (hash, column 1, column 2).


@numba.njit(cache=True, inline="always")
def _find(keys, first, second, key_hash):
    """Slot of the entry (`key_hash`, `first`, `second`), or ``-1 - free slot`` when absent."""
    mask = keys.shape[0] - 1
    slot = np.int64((key_hash >> _SLOT_SHIFT) & np.uint64(mask))
    while keys[slot, 0] != 0:
        if keys[slot, 0] == key_hash and keys[slot, 1] == first and keys[slot, 2] == second:
            return slot
        slot = (slot + 1) & mask
    return -1 - slot


@numba.njit(cache=True)
def _delete(keys, vals, slot):
    """Backward-shift deletion for linear probing (no tombstones)."""
    mask = keys.shape[0] - 1
    probe = slot
    while True:
        probe = (probe + 1) & mask
        if keys[probe, 0] == 0:
            break
        home = np.int64((keys[probe, 0] >> _SLOT_SHIFT) & np.uint64(mask))
        if slot <= probe:
            stays = slot < home <= probe
        else:
            stays = home > slot or home <= probe
        if stays:
            continue
        for col in range(keys.shape[1]):
            keys[slot, col] = keys[probe, col]
        for col in range(vals.shape[1]):
            vals[slot, col] = vals[probe, col]
        slot = probe
    keys[slot, 0] = 0


@numba.njit(cache=True, inline="always")
def _level_add(level_keys, level_vals, counts, instrument, side, price, delta):
    """Add `delta` to a level; returns the new total (the level is removed at <= 0)."""
    owner = np.uint64(instrument) * _LEVEL_SIDES + np.uint64(side)
    price_bits = np.uint64(price)
    key_hash = _mix(price_bits ^ (owner * _GOLDEN))
    slot = _find(level_keys, owner, price_bits, key_hash)
    if slot < 0:
        if delta <= 0:
            return 0
        slot = -1 - slot
        level_keys[slot, 0] = key_hash
        level_keys[slot, 1] = owner
        level_keys[slot, 2] = price_bits
        level_vals[slot, 0] = delta
        counts[1] += 1
        return delta
    total = level_vals[slot, 0] + delta
    if total <= 0:
        _delete(level_keys, level_vals, slot)
        counts[1] -= 1
        return 0
    level_vals[slot, 0] = total
    return total


@numba.njit(cache=True)
def rehash(keys, vals, new_keys, new_vals, drop_instrument, instrument_col, instrument_div):
    """Copy every entry into the new (empty) tables, dropping instrument `drop_instrument`
    (-1: none); an entry's instrument is ``keys[:, instrument_col] // instrument_div``."""
    mask = new_keys.shape[0] - 1
    copied = 0
    for old in range(keys.shape[0]):
        key_hash = keys[old, 0]
        if key_hash == 0:
            continue
        if drop_instrument >= 0 and np.int64(keys[old, instrument_col] // np.uint64(instrument_div)) == drop_instrument:
            continue
        slot = np.int64((key_hash >> _SLOT_SHIFT) & np.uint64(mask))
        while new_keys[slot, 0] != 0:
            slot = (slot + 1) & mask
        for col in range(keys.shape[1]):
            new_keys[slot, col] = keys[old, col]
        for col in range(vals.shape[1]):
            new_vals[slot, col] = vals[old, col]
        copied += 1
    return copied


@numba.njit(cache=True)
def _drop(keys, vals, instrument, instrument_col, instrument_div):
    """Delete every entry of `instrument` in place (one pass; a slot refilled by the
    backward shift is checked again). Returns how many were deleted."""
    cap = keys.shape[0]
    victims = 0
    used = 0
    for slot in range(cap):
        if keys[slot, 0] != 0:
            used += 1
            if keys[slot, instrument_col] // instrument_div == instrument:
                victims += 1
    if victims == used:  # the only instrument: empty the table without shifting
        for slot in range(cap):
            keys[slot, 0] = 0
        return victims
    gone = 0
    slot = 0
    while slot < cap:
        if keys[slot, 0] != 0 and keys[slot, instrument_col] // instrument_div == instrument:
            _delete(keys, vals, slot)
            gone += 1
        else:
            slot += 1
    return gone


@numba.njit(cache=True, inline="always")
def emit(out_words, out_floats, n, ts_event, ts_recv, price, price2, size, size2, seq, instrument, kind, side,
         flags):
    """Write record `n` through 8-byte word views of a `RECORD_DTYPE` array (every byte):
    `out_words` as uint64, `out_floats` as float64 (the two size fields)."""
    out_words[n, 0] = np.uint64(ts_event)
    out_words[n, 1] = np.uint64(ts_recv)
    out_words[n, 2] = np.uint64(price)
    out_words[n, 3] = np.uint64(price2)
    out_floats[n, 4] = size
    out_floats[n, 5] = size2
    out_words[n, 6] = np.uint64(seq)
    out_words[n, 7] = (
        np.uint64(instrument)
        | (np.uint64(kind) << np.uint64(32))
        | (np.uint64(side) << np.uint64(40))
        | (np.uint64(flags) << np.uint64(48))
    )


@numba.njit(cache=True, inline="always")
def side_code(dbn_side):
    """DBN side byte -> our Side; `_NO_SIDE` when not A/B/N."""
    if dbn_side == 66:  # 'B'
        return _BID
    if dbn_side == 65:  # 'A'
        return _ASK
    if dbn_side == 78:  # 'N'
        return 0
    return _NO_SIDE


@numba.njit(cache=True, inline="always")
def valid_action(action):
    return (action == _ADD or action == _CANCEL or action == _MODIFY or action == _CLEAR
            or action == _TRADE_ACTION or action == _FILL or action == _NONE)


@numba.njit(cache=True, inline="always")
def _checked_side(action, dbn_side):
    """Our side of an event, or `_NO_SIDE` when its action or side byte is not one of DBN's."""
    return side_code(dbn_side) if valid_action(action) else _NO_SIDE


@numba.njit(cache=True, inline="always")
def has_room(order_keys, level_keys, counts):
    """Whether one more event fits below half load (the caller grows the tables otherwise)."""
    return counts[0] + 1 <= order_keys.shape[0] // 2 and counts[1] + 2 <= level_keys.shape[0] // 2


@numba.njit(cache=True, inline="always")
def step(order_keys, order_vals, level_keys, level_vals, counts, stats, instrument, order_id, price, size, action,
         side, flags, ts_event, ts_recv, seq, out_words, out_floats, n):
    """Apply one valid MBO event (`action` ASCII, `side` our Side); returns the new output count."""
    kept = flags & FLAGS_KEPT
    if action == _TRADE_ACTION:
        emit(out_words, out_floats, n, ts_event, ts_recv, price, 0, np.float64(size), 0.0, seq, instrument, _TRADE,
             side, kept)
        return n + 1
    if action == _FILL or action == _NONE:
        return n
    if action == _CLEAR:
        counts[0] -= _drop(order_keys, order_vals, np.uint64(instrument), 2, np.uint64(1))
        counts[1] -= _drop(level_keys, level_vals, np.uint64(instrument), 1, _LEVEL_SIDES)
        emit(out_words, out_floats, n, ts_event, ts_recv, 0, 0, 0.0, 0.0, seq, instrument, _RESET, 0, kept)
        return n + 1
    if flags & F_TOB:
        stats[_STAT_TOB] += 1
        return n
    order = np.uint64(order_id)
    key_hash = _mix(order ^ (np.uint64(instrument) * _GOLDEN))
    slot = _find(order_keys, order, np.uint64(instrument), key_hash)
    if action == _CANCEL:
        if slot < 0:
            stats[_STAT_UNKNOWN_ORDER] += 1
            return n
        old_side = np.int64(order_keys[slot, 3])
        old_price = np.int64(order_keys[slot, 4])
        old_size = np.int64(order_keys[slot, 5])
        cancelled = np.int64(size)
        if cancelled > old_size:
            stats[_STAT_CANCEL_EXCEEDS] += 1
            cancelled = old_size
        if cancelled == 0:
            return n
        left = old_size - cancelled
        if left == 0:
            _delete(order_keys, order_vals, slot)
            counts[0] -= 1
        else:
            order_keys[slot, 5] = np.uint64(left)
        total = _level_add(level_keys, level_vals, counts, instrument, old_side, old_price, -cancelled)
        emit(out_words, out_floats, n, ts_event, ts_recv, old_price, 0, np.float64(total), 0.0, seq, instrument,
             _BOOK, old_side, kept)
        return n + 1
    if side == 0:  # an add/modify must have a side
        stats[_STAT_NO_SIDE] += 1
        return n
    new_size = np.int64(size)
    if slot >= 0:
        if action == _ADD:
            stats[_STAT_DUPLICATE_ADD] += 1
        old_side = np.int64(order_keys[slot, 3])
        old_price = np.int64(order_keys[slot, 4])
        old_size = np.int64(order_keys[slot, 5])
        if old_side == side and old_price == price:  # same level: only the size changes
            total = _level_add(level_keys, level_vals, counts, instrument, side, price, new_size - old_size)
            if new_size == 0:
                _delete(order_keys, order_vals, slot)
                counts[0] -= 1
            else:
                order_keys[slot, 5] = np.uint64(new_size)
            emit(out_words, out_floats, n, ts_event, ts_recv, price, 0, np.float64(total), 0.0, seq, instrument,
                 _BOOK, side, kept)
            return n + 1
        # the order moves: leave the old level first, which is the event's last record only when
        # the order leaves with size 0 (a consumer examines the book at F_LAST, so it must not be lost)
        total = _level_add(level_keys, level_vals, counts, instrument, old_side, old_price, -old_size)
        emit(out_words, out_floats, n, ts_event, ts_recv, old_price, 0, np.float64(total), 0.0, seq, instrument,
             _BOOK, old_side, kept if new_size == 0 else kept & ~F_LAST)
        n += 1
        if new_size == 0:
            _delete(order_keys, order_vals, slot)
            counts[0] -= 1
            return n
        order_keys[slot, 3] = np.uint64(side)
        order_keys[slot, 4] = np.uint64(price)
        order_keys[slot, 5] = np.uint64(new_size)
    else:
        if action == _MODIFY:
            stats[_STAT_MODIFY_UNKNOWN] += 1
        if new_size == 0:
            return n
        free = -1 - slot
        order_keys[free, 0] = key_hash
        order_keys[free, 1] = order
        order_keys[free, 2] = np.uint64(instrument)
        order_keys[free, 3] = np.uint64(side)
        order_keys[free, 4] = np.uint64(price)
        order_keys[free, 5] = np.uint64(new_size)
        counts[0] += 1
    total = _level_add(level_keys, level_vals, counts, instrument, side, price, new_size)
    emit(out_words, out_floats, n, ts_event, ts_recv, price, 0, np.float64(total), 0.0, seq, instrument, _BOOK, side,
         kept)
    return n + 1


@numba.njit(cache=True)
def apply_mbo(order_keys, order_vals, level_keys, level_vals, counts, stats, start, instrument_id, order_id, price,
              size, action, side, flags, ts_event, ts_recv, seq, out_words, out_floats, source, nout):
    """Apply events from `start` (parallel arrays); `source[j]` gets the event index of output
    `j`. Returns (next index, outputs), early when the tables need to grow."""
    n = nout
    for event in range(start, instrument_id.shape[0]):
        if not has_room(order_keys, level_keys, counts):
            return event, n
        our_side = _checked_side(action[event], side[event])
        if our_side == _NO_SIDE:
            stats[STAT_MALFORMED] += 1
            continue
        m = step(order_keys, order_vals, level_keys, level_vals, counts, stats, instrument_id[event],
                 order_id[event], price[event], size[event], action[event], our_side, flags[event], ts_event[event],
                 ts_recv[event], seq[event], out_words, out_floats, n)
        for j in range(n, m):
            source[j] = event
        n = m
    return instrument_id.shape[0], n


@numba.njit(cache=True)
def levels_of(level_keys, level_vals, instrument, side, out_price, out_size):
    """Every level of (`instrument`, `side`) into `out_price`/`out_size`; returns how many."""
    n = 0
    owner = np.uint64(instrument) * _LEVEL_SIDES + np.uint64(side)
    for slot in range(level_keys.shape[0]):
        if level_keys[slot, 0] != 0 and level_keys[slot, 1] == owner:
            out_price[n] = np.int64(level_keys[slot, 2])
            out_size[n] = level_vals[slot, 0]
            n += 1
    return n


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
        rtype = buf[pos + 1]
        want = sizes[rtype]
        ok = length >= 16 and (want == 0 or want == length)
        if ok and want == 0 and resyncing:
            ok = False  # resync only on known record types
        elif ok and want == 0:
            after = pos + length
            if after + 2 <= end:
                after_length = np.int64(buf[after]) * 4
                ok = sizes[buf[after + 1]] == after_length and after_length >= 16
        if not ok:
            if not resyncing:
                bad += 1
                resyncing = True
            pos += 1
            continue
        if resyncing:
            after = pos + length
            if after + 2 <= end:
                after_length = np.int64(buf[after]) * 4
                if not (sizes[buf[after + 1]] == after_length and after_length >= 16):
                    pos += 1
                    continue
        if pos + length > end:
            break
        resyncing = False
        offsets[n] = pos
        rtypes[n] = rtype
        n += 1
        pos += length
    return n, pos, bad, resyncing


@numba.njit(cache=True, inline="always")
def _u64_at(words, byte):
    """The u64 at `byte` (a multiple of 8): records start 8-byte aligned (the decoder
    realigns otherwise) and every DBN field of 8 bytes sits at a multiple of 8 in its record."""
    return words[byte >> 3]


@numba.njit(cache=True, inline="always")
def _u32_low_at(words, byte):
    """The u32 at `byte` (a multiple of 8): the low half of its word."""
    return np.uint32(words[byte >> 3] & np.uint64(0xFFFFFFFF))


@numba.njit(cache=True, inline="always")
def _u32_high_at(words, byte):
    """The u32 at `byte` (4 past a multiple of 8): the high half of its word."""
    return np.uint32(words[byte >> 3] >> np.uint64(32))


@numba.njit(cache=True)
def _mbo_run(buf, words, offsets, start, end, now, order_keys, order_vals, level_keys, level_vals, counts, stats,
             out_words, out_floats, nout):
    """MBO records [start, end) through the book; stops early when the tables must grow."""
    for k in range(start, end):
        if not has_room(order_keys, level_keys, counts):
            return k, nout
        rec = offsets[k]
        action = buf[rec + 38]
        side = _checked_side(action, buf[rec + 39])
        if side == _NO_SIDE:
            stats[STAT_MALFORMED] += 1
            continue
        ts_recv = now if now != 0 else np.int64(_u64_at(words, rec + 40))
        nout = step(order_keys, order_vals, level_keys, level_vals, counts, stats, _u32_high_at(words, rec),
                    _u64_at(words, rec + 16), np.int64(_u64_at(words, rec + 24)), _u32_low_at(words, rec + 32),
                    action, side, buf[rec + 36], np.int64(_u64_at(words, rec + 8)), ts_recv,
                    _u32_high_at(words, rec + 48), out_words, out_floats, nout)
    return end, nout


@numba.njit(cache=True, inline="always")
def _emit_trade(words, rec, out_words, out_floats, n, ts_event, ts_recv, seq, instrument, side, kept):
    """The trade of a trades or mbp-1 record at byte `rec` (price at +16, size at +24) as record `n`."""
    emit(out_words, out_floats, n, ts_event, ts_recv, np.int64(_u64_at(words, rec + 16)), 0,
         np.float64(_u32_low_at(words, rec + 24)), 0.0, seq, instrument, _TRADE, side, kept)


@numba.njit(cache=True)
def _trade_run(buf, words, offsets, start, end, now, rtype, tbbo, stats, out_words, out_floats, nout):
    """Trades (`_RT_TRADES`) or mbp-1/tbbo (`_RT_MBP_1`) records [start, end)."""
    for k in range(start, end):
        # The same prelude as `_mbo_run` at this layout's offsets (action +28, side +29); it
        # stays inline because it ends with the caller's `continue`.
        rec = offsets[k]
        action = buf[rec + 28]
        side = _checked_side(action, buf[rec + 29])
        if side == _NO_SIDE:
            stats[STAT_MALFORMED] += 1
            continue
        instrument = _u32_high_at(words, rec)
        ts_event = np.int64(_u64_at(words, rec + 8))
        ts_recv = now if now != 0 else np.int64(_u64_at(words, rec + 32))
        seq = _u32_high_at(words, rec + 40)
        kept = buf[rec + 30] & FLAGS_KEPT
        trade = action == _TRADE_ACTION
        if rtype == _RT_TRADES:
            if trade:
                _emit_trade(words, rec, out_words, out_floats, nout, ts_event, ts_recv, seq, instrument, side, kept)
                nout += 1
            else:
                stats[STAT_NOT_TRADE] += 1
            continue
        if trade and not tbbo:
            _emit_trade(words, rec, out_words, out_floats, nout, ts_event, ts_recv, seq, instrument, side, kept)
            nout += 1
        emit(out_words, out_floats, nout, ts_event, ts_recv, np.int64(_u64_at(words, rec + 48)),
             np.int64(_u64_at(words, rec + 56)), np.float64(_u32_low_at(words, rec + 64)),
             np.float64(_u32_high_at(words, rec + 64)), seq, instrument, _QUOTE, 0, kept)
        nout += 1
        if trade and tbbo:
            _emit_trade(words, rec, out_words, out_floats, nout, ts_event, ts_recv, seq, instrument, side, kept)
            nout += 1
    return nout


@numba.njit(cache=True)
def convert(buf, words, offsets, rtypes, start, nrec, now, tbbo, order_keys, order_vals, level_keys, level_vals,
            counts, stats, out_words, out_floats, nout, other, nother):
    """Convert framed records from `start`, one run of same-type records at a time (tight
    loops per type). Returns (next record, outputs, others); stops early (next record < nrec)
    when the book tables must grow before an MBO event. `words` is the u64 view of `buf`,
    which must start 8-byte aligned, with every offset a multiple of 8; `other` collects the
    indices of records that produce no records."""
    k = start
    while k < nrec:
        rtype = rtypes[k]
        run_end = k + 1
        while run_end < nrec and rtypes[run_end] == rtype:
            run_end += 1
        if rtype == _RT_MBO:
            stop, nout = _mbo_run(buf, words, offsets, k, run_end, now, order_keys, order_vals, level_keys,
                                  level_vals, counts, stats, out_words, out_floats, nout)
            if stop < run_end:
                return stop, nout, nother
        elif rtype == _RT_TRADES or rtype == _RT_MBP_1:
            nout = _trade_run(buf, words, offsets, k, run_end, now, rtype, tbbo, stats, out_words, out_floats, nout)
        else:
            for q in range(k, run_end):
                other[nother] = q
                nother += 1
        k = run_end
    return nrec, nout, nother


@numba.njit(cache=True)
def remap(ids, keys, vals, start):
    """Rewrite `ids` in place from `start` on, each vendor id to its value in the map of the
    sorted `keys` to `vals`, stopping at the first id not in `keys` (left as it is). Returns
    (where it stopped: ``len(ids)`` when every id was known, how many ids it rewrote to 0).

    One pass over a field of 64-byte records touches every cache line of the batch: the
    searchsorted, compare, select and assign this replaces were five such passes."""
    n_keys = keys.shape[0]
    zeros = 0
    hit = 0  # the last key found: a batch is mostly runs of the same instrument
    for i in range(start, ids.shape[0]):
        vendor = ids[i]
        if hit >= n_keys or keys[hit] != vendor:
            lo, hi = 0, n_keys
            while lo < hi:
                mid = (lo + hi) >> 1
                if keys[mid] < vendor:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == n_keys or keys[lo] != vendor:
                return i, zeros
            hit = lo
        ours = vals[hit]
        ids[i] = ours
        zeros += ours == 0
    return ids.shape[0], zeros
