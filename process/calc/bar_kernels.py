"""The bar state machines, compiled with numba: one pass over a batch's trades.

State per (symbol, bar spec) lives in ``bi`` (int64, columns `B_*`) and ``bf`` (float64:
volume, notional). A closed bar is written as one row of ``oi``/``of`` (columns `O_*`,
`OF_*`); a run of empty time bars is one row whose `O_NEMPTY` says how many, expanded by
the Python side. Rows come out in the order bars close: by trade, then by spec.
All sums are sequential in arrival order: volume ``+= size``, notional ``+= price/1e9 * size``.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.process.calc.batch import PRICE, SIZE, TS_EVENT, TS_RECV

__all__ = [
    "TIME", "TICKS", "VOLUME", "DOLLAR",
    "B_OPEN", "B_HIGH", "B_LOW", "B_CLOSE", "B_TRADES", "B_START", "B_LAST_EV", "B_LAST_RECV", "B_WM", "NB_I",
    "B_VOL", "B_NOTIONAL", "NB_F",
    "O_SYM", "O_SPEC", "O_START", "O_END", "O_OPEN", "O_HIGH", "O_LOW", "O_CLOSE", "O_TRADES", "O_EV",
    "O_RECV", "O_NEMPTY", "NO_I", "OF_VOL", "OF_VWAP", "NO_F", "NO_WATERMARK",
    "update_bars", "close_due", "flush_bars",
]

TIME, TICKS, VOLUME, DOLLAR = 0, 1, 2, 3
"""Bar spec kinds."""

B_OPEN, B_HIGH, B_LOW, B_CLOSE, B_TRADES, B_START, B_LAST_EV, B_LAST_RECV, B_WM = range(9)
NB_I = 9
"""Integer state columns. `B_TRADES` == 0 means no bar is open; `B_START` is the interval start
(time bars) or the first trade's ts_event; `B_WM` (time bars) is the end of the last closed
interval: a trade before it is late."""
B_VOL, B_NOTIONAL = 0, 1
NB_F = 2

O_SYM, O_SPEC, O_START, O_END, O_OPEN, O_HIGH, O_LOW, O_CLOSE, O_TRADES, O_EV, O_RECV, O_NEMPTY = range(12)
NO_I = 12
OF_VOL, OF_VWAP = 0, 1
NO_F = 2

NO_WATERMARK = np.int64(np.iinfo(np.int64).min)
"""`B_WM` before any bar of the spec closed."""


@numba.njit(cache=True, error_model="numpy", inline="always")
def _emit(bi, bf, oi, of, r, s, k, ts_end):
    oi[r, O_SYM] = s
    oi[r, O_SPEC] = k
    oi[r, O_START] = bi[s, k, B_START]
    oi[r, O_END] = ts_end
    oi[r, O_OPEN] = bi[s, k, B_OPEN]
    oi[r, O_HIGH] = bi[s, k, B_HIGH]
    oi[r, O_LOW] = bi[s, k, B_LOW]
    oi[r, O_CLOSE] = bi[s, k, B_CLOSE]
    oi[r, O_TRADES] = bi[s, k, B_TRADES]
    oi[r, O_EV] = bi[s, k, B_LAST_EV]
    oi[r, O_RECV] = bi[s, k, B_LAST_RECV]
    oi[r, O_NEMPTY] = 0
    of[r, OF_VOL] = bf[s, k, B_VOL]
    of[r, OF_VWAP] = bf[s, k, B_NOTIONAL] / bf[s, k, B_VOL]
    bi[s, k, B_TRADES] = 0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _apply(bi, bf, s, k, p, q, pq, t, tr):
    if bi[s, k, B_TRADES] == 0:
        bi[s, k, B_OPEN] = p
        bi[s, k, B_HIGH] = p
        bi[s, k, B_LOW] = p
        bf[s, k, B_VOL] = q
        bf[s, k, B_NOTIONAL] = pq
    else:
        if p > bi[s, k, B_HIGH]:
            bi[s, k, B_HIGH] = p
        if p < bi[s, k, B_LOW]:
            bi[s, k, B_LOW] = p
        bf[s, k, B_VOL] += q
        bf[s, k, B_NOTIONAL] += pq
    bi[s, k, B_CLOSE] = p
    bi[s, k, B_TRADES] += 1
    bi[s, k, B_LAST_EV] = t
    bi[s, k, B_LAST_RECV] = tr


@numba.njit(cache=True, error_model="numpy")
def update_bars(ri, rf, sym, trades, n_trades, spec_kind, spec_int, spec_float, emit_empty, max_empty,
                bi, bf, oi, of, late_by_spec, counts):
    """Apply `n_trades` trades (row indices `trades`) to every bar spec; return rows written.

    ``counts``: [late trades, empty bars emitted, empty bars skipped over the cap].
    `oi`/`of` must have room for ``2 * n_trades * n_specs`` rows.
    """
    nspec = spec_kind.shape[0]
    r = 0
    for j in range(n_trades):
        i = trades[j]
        s = sym[i]
        p = ri[i, PRICE]
        q = rf[i, SIZE]
        t = ri[i, TS_EVENT]
        tr = ri[i, TS_RECV]
        pq = (p / 1e9) * q
        late = False
        for k in range(nspec):
            kind = spec_kind[k]
            if kind == TIME:
                width = spec_int[k]
                if bi[s, k, B_TRADES] > 0:
                    open_start = bi[s, k, B_START]
                    if open_start <= t and t - open_start < width:  # the open bar (no division)
                        _apply(bi, bf, s, k, p, q, pq, t, tr)
                        continue
                    start = t - t % width
                    if start < open_start:
                        late = True
                        late_by_spec[k] += 1
                        continue
                    _emit(bi, bf, oi, of, r, s, k, open_start + width)
                    r += 1
                    bi[s, k, B_WM] = open_start + width
                elif t < bi[s, k, B_WM]:
                    late = True
                    late_by_spec[k] += 1
                    continue
                else:
                    start = t - t % width
                wm = bi[s, k, B_WM]
                if emit_empty and wm != NO_WATERMARK and start > wm:
                    gap = (start - wm) // width
                    n_emit = min(gap, max_empty)
                    counts[2] += gap - n_emit
                    if n_emit > 0:
                        counts[1] += n_emit
                        oi[r, O_SYM] = s
                        oi[r, O_SPEC] = k
                        oi[r, O_START] = wm
                        oi[r, O_END] = wm + width
                        oi[r, O_OPEN] = bi[s, k, B_CLOSE]
                        oi[r, O_HIGH] = bi[s, k, B_CLOSE]
                        oi[r, O_LOW] = bi[s, k, B_CLOSE]
                        oi[r, O_CLOSE] = bi[s, k, B_CLOSE]
                        oi[r, O_TRADES] = 0
                        oi[r, O_EV] = bi[s, k, B_LAST_EV]
                        oi[r, O_RECV] = bi[s, k, B_LAST_RECV]
                        oi[r, O_NEMPTY] = n_emit
                        of[r, OF_VOL] = 0.0
                        of[r, OF_VWAP] = bi[s, k, B_CLOSE] / 1e9
                        r += 1
                bi[s, k, B_START] = start
                _apply(bi, bf, s, k, p, q, pq, t, tr)
            else:
                if bi[s, k, B_TRADES] == 0:
                    bi[s, k, B_START] = t
                _apply(bi, bf, s, k, p, q, pq, t, tr)
                if kind == TICKS:
                    done = bi[s, k, B_TRADES] >= spec_int[k]
                elif kind == VOLUME:
                    done = bf[s, k, B_VOL] >= spec_float[k]
                else:
                    done = bf[s, k, B_NOTIONAL] >= spec_float[k]
                if done:
                    _emit(bi, bf, oi, of, r, s, k, t)
                    r += 1
        if late:
            counts[0] += 1
    return r


@numba.njit(cache=True, error_model="numpy")
def close_due(nsym, spec_kind, spec_int, delay, now, bi, bf, oi, of):
    """Live: close every open time bar whose ``end + delay <= now``; rows by symbol, then spec."""
    r = 0
    for s in range(nsym):
        for k in range(spec_kind.shape[0]):
            if spec_kind[k] != TIME or bi[s, k, B_TRADES] == 0:
                continue
            end = bi[s, k, B_START] + spec_int[k]
            if end + delay <= now:
                _emit(bi, bf, oi, of, r, s, k, end)
                bi[s, k, B_WM] = end
                r += 1
    return r


@numba.njit(cache=True, error_model="numpy")
def flush_bars(nsym, spec_kind, spec_int, bi, bf, oi, of):
    """Close every open bar (clean stop); rows by symbol, then spec.

    A flushed time bar keeps its interval's bounds (replay of a file gives the same last
    bar as a batch computation); its interval still counts as closed, so later trades in it
    are late. How far it got shows in its `ts_event` (the last trade).
    """
    r = 0
    for s in range(nsym):
        for k in range(spec_kind.shape[0]):
            if bi[s, k, B_TRADES] == 0:
                continue
            if spec_kind[k] == TIME:
                _emit(bi, bf, oi, of, r, s, k, bi[s, k, B_START] + spec_int[k])
                bi[s, k, B_WM] = bi[s, k, B_START] + spec_int[k]
            else:
                _emit(bi, bf, oi, of, r, s, k, bi[s, k, B_LAST_EV])
            r += 1
    return r
