"""A record batch as two plain 2-D views, and the one pass that sorts it by kind.

The calculators' numba kernels take a batch as ``(n, 8)`` int64 and float64 views of the same
bytes (one row per 64-byte record) instead of eight strided field views: one array type for
every batch size, so each kernel compiles once, and no copy. The column constants below are
checked against `RECORD_DTYPE` at import. `select` walks the batch once, validates every
record, counts it by kind and lists the valid trades and the crossed or locked quotes.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind

__all__ = [
    "columns",
    "select",
    "TS_EVENT",
    "TS_RECV",
    "PRICE",
    "PRICE2",
    "SIZE",
    "SIZE2",
    "META",
    "KIND_SHIFT",
    "SIDE_SHIFT",
    "FLAGS_SHIFT",
    "COUNT_NAMES",
    "N_COUNTS",
]

TS_EVENT, TS_RECV, PRICE, PRICE2, SIZE, SIZE2, SEQUENCE, META = range(8)
"""Column of each field in the ``(n, 8)`` views (`SIZE`/`SIZE2` in the float view)."""
KIND_SHIFT = 32
"""``(rows_int[i, META] >> KIND_SHIFT) & 0xFF`` is the record's kind (byte 60, little-endian)."""
SIDE_SHIFT = 40
FLAGS_SHIFT = 48
"""``(rows_int[i, META] >> FLAGS_SHIFT) & 0xFF`` is the record's `Flag` bits (byte 62)."""

_FIELDS = RECORD_DTYPE.fields
assert _FIELDS is not None
for _name, _col in (("ts_event", TS_EVENT), ("ts_recv", TS_RECV), ("price", PRICE), ("price2", PRICE2),
                    ("size", SIZE), ("size2", SIZE2), ("instrument_id", META)):
    assert _FIELDS[_name][1] == 8 * _col, _name
assert _FIELDS["kind"][1] == 56 + KIND_SHIFT // 8
assert _FIELDS["side"][1] == 56 + SIDE_SHIFT // 8
assert _FIELDS["flags"][1] == 56 + FLAGS_SHIFT // 8

COUNT_NAMES = ("trades", "bad_trades", "quotes", "book_updates", "resets", "bad_records")
"""Counters `select` fills, in the order of its ``counts`` array."""
N_COUNTS = len(COUNT_NAMES)
_TRADES, _BAD_TRADES, _QUOTES, _BOOK, _RESETS, _BAD_RECORDS = range(N_COUNTS)
_TRADE, _QUOTE, _BOOKK, _RESET = int(Kind.TRADE), int(Kind.QUOTE), int(Kind.BOOK), int(Kind.RESET)
_CORRECTION, _CANCEL = int(Kind.CORRECTION), int(Kind.CANCEL)
_UNDEF = np.int64(UNDEF_PRICE)
_I64_MAX = np.int64(np.iinfo(np.int64).max)
_I64_MIN = np.int64(np.iinfo(np.int64).min)


def columns(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows_int, rows_float)``: int64 and float64 ``(n, 8)`` views of a `RECORD_DTYPE` batch."""
    dtype = getattr(records, "dtype", None)
    if dtype is not RECORD_DTYPE and (not isinstance(records, np.ndarray) or dtype != RECORD_DTYPE):
        got = dtype if isinstance(records, np.ndarray) else type(records).__name__
        raise TypeError(f"`records` must be a numpy array of RECORD_DTYPE; was {got}")
    if records.ndim != 1:
        raise ValueError(f"`records` must be 1-D; was shape {records.shape}")
    if not records.flags.c_contiguous or not records.flags.writeable:
        # One array type per kernel argument: a read-only or strided batch would make numba
        # compile (seconds) another version of every kernel, so it is copied instead.
        records = np.array(records, order="C")
    # Arrays over the batch's buffer, not `records.view`: numpy vets a view of a structured
    # dtype in Python, which cost more than the rest of this function.
    shape = (len(records), 8)
    return np.ndarray(shape, np.int64, records), np.ndarray(shape, np.float64, records)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def select(rows_int, rows_float, sym, nsym, check_quotes, stop_at_voids, trades, flagged_quotes, counts, first_bad):
    """One pass over a batch: validate, count, and list what the calculators need.

    Writes the row index of every valid trade into `trades` and of every quote with
    bid >= ask into `flagged_quotes` (when `check_quotes`), adds to `counts` (order of
    `COUNT_NAMES`) and notes the first bad row of each kind in `first_bad`. A valid trade
    has a known symbol, ``ts_event > 0``, a defined price and a finite size > 0.
    Returns ``(n_trades, n_flagged_quotes, n_book_or_reset, n_bad, min_ts_event, max_ts_event)``
    for this batch (the times of valid trades only); with `stop_at_voids`, ``n_trades`` -1 and
    `counts` untouched when the batch holds a CORRECTION or CANCEL record (the caller splits
    them off first).
    """
    # Counted in locals, added to `counts` once: an increment through the array per record
    # waits on the store before it.
    n_trades = n_bad_trades = n_quotes = n_book = n_resets = n_bad_records = 0
    nq = 0
    tmin = _I64_MAX
    tmax = _I64_MIN
    for i in range(rows_int.shape[0]):
        s = sym[i]
        kind = (rows_int[i, META] >> KIND_SHIFT) & 0xFF
        if kind == _TRADE and 0 <= s < nsym:
            size = rows_float[i, SIZE]
            t = rows_int[i, TS_EVENT]
            if rows_int[i, PRICE] == _UNDEF or not (size > 0.0) or not (size < np.inf) or t <= 0:
                n_bad_trades += 1
                if first_bad[_BAD_TRADES] < 0:
                    first_bad[_BAD_TRADES] = i
                continue
            trades[n_trades] = i
            n_trades += 1
            tmin = min(tmin, t)
            tmax = max(tmax, t)
        elif stop_at_voids and (kind == _CORRECTION or kind == _CANCEL):
            return -1, 0, 0, 0, tmin, tmax
        elif s < 0 or s >= nsym or kind < _TRADE or kind > _RESET:
            n_bad_records += 1
            if first_bad[_BAD_RECORDS] < 0:
                first_bad[_BAD_RECORDS] = i
        elif kind == _QUOTE:
            n_quotes += 1
            if check_quotes:
                bid = rows_int[i, PRICE]
                ask = rows_int[i, PRICE2]
                if bid != _UNDEF and ask != _UNDEF and bid >= ask:
                    flagged_quotes[nq] = i
                    nq += 1
        elif kind == _BOOKK:
            n_book += 1
        else:
            n_resets += 1
    counts[_TRADES] += n_trades
    counts[_BAD_TRADES] += n_bad_trades
    counts[_QUOTES] += n_quotes
    counts[_BOOK] += n_book
    counts[_RESETS] += n_resets
    counts[_BAD_RECORDS] += n_bad_records
    return n_trades, nq, n_book + n_resets, n_bad_trades + n_bad_records, tmin, tmax
