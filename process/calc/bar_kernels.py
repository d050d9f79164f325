"""The bar state machines, compiled with numba: one pass over a batch's trades.

State per (symbol, bar spec) lives in ``bar_int`` (int64, columns `B_*`) and ``bar_float``
(float64: volume, notional). A closed bar is written as one row of ``out_int``/``out_float``
(columns `O_*`, `OF_*`); a run of empty time bars is one row whose `O_NEMPTY` says how many,
expanded by the Python side. Rows come out in the order bars close: by trade, then by spec.
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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _write_row(out_int, out_float, row, s, k, start, end, open_, high, low, close, trades, ev, recv, n_empty,
               volume, vwap):
    """One output row: a closed bar of symbol `s`, spec `k` (or a run of `n_empty` empty bars)."""
    out_int[row, O_SYM] = s
    out_int[row, O_SPEC] = k
    out_int[row, O_START] = start
    out_int[row, O_END] = end
    out_int[row, O_OPEN] = open_
    out_int[row, O_HIGH] = high
    out_int[row, O_LOW] = low
    out_int[row, O_CLOSE] = close
    out_int[row, O_TRADES] = trades
    out_int[row, O_EV] = ev
    out_int[row, O_RECV] = recv
    out_int[row, O_NEMPTY] = n_empty
    out_float[row, OF_VOL] = volume
    out_float[row, OF_VWAP] = vwap


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _emit(bar_int, bar_float, out_int, out_float, row, s, k, ts_end):
    """Write the open bar of (`s`, `k`) as output row `row`, ending at `ts_end`, and close it."""
    bar = bar_int[s, k]  # this (symbol, spec)'s state columns
    _write_row(out_int, out_float, row, s, k, bar[B_START], ts_end, bar[B_OPEN], bar[B_HIGH], bar[B_LOW],
               bar[B_CLOSE], bar[B_TRADES], bar[B_LAST_EV], bar[B_LAST_RECV], 0,
               bar_float[s, k, B_VOL], bar_float[s, k, B_NOTIONAL] / bar_float[s, k, B_VOL])
    bar[B_TRADES] = 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _apply(bar_int, bar_float, s, k, price, size, notional, ev, recv):
    if bar_int[s, k, B_TRADES] == 0:
        bar_int[s, k, B_OPEN] = price
        bar_int[s, k, B_HIGH] = price
        bar_int[s, k, B_LOW] = price
        bar_float[s, k, B_VOL] = size
        bar_float[s, k, B_NOTIONAL] = notional
    else:
        if price > bar_int[s, k, B_HIGH]:
            bar_int[s, k, B_HIGH] = price
        if price < bar_int[s, k, B_LOW]:
            bar_int[s, k, B_LOW] = price
        bar_float[s, k, B_VOL] += size
        bar_float[s, k, B_NOTIONAL] += notional
    bar_int[s, k, B_CLOSE] = price
    bar_int[s, k, B_TRADES] += 1
    bar_int[s, k, B_LAST_EV] = ev
    bar_int[s, k, B_LAST_RECV] = recv


@numba.njit(cache=True, nogil=True, error_model="numpy")
def update_bars(rows_int, rows_float, sym, trades, n_trades, spec_kind, spec_int, spec_float, emit_empty,
                max_empty, bar_int, bar_float, out_int, out_float, late_by_spec, counts, late_mask):
    """Apply `n_trades` trades (row indices `trades`) to every bar spec; return rows written.

    ``counts``: [late trades, empty bars emitted, empty bars skipped over the cap].
    `out_int`/`out_float` must have room for ``2 * n_trades * n_specs`` rows.
    ``late_mask[j]`` gets bit k set when trade j is late for time spec k (not in that bar), so a
    correction can rebuild a bar from exactly the trades it holds (`revisions`).
    """
    nspec = spec_kind.shape[0]
    row = 0
    for j in range(n_trades):
        # The same record read as `trade_kernels.update_trades`: numba's cache would not see a
        # change to a shared helper in another module, so each kernel module reads it itself.
        i = trades[j]
        s = sym[i]
        price = rows_int[i, PRICE]
        size = rows_float[i, SIZE]
        ev = rows_int[i, TS_EVENT]
        recv = rows_int[i, TS_RECV]
        notional = (price / 1e9) * size
        late = False
        mask = 0
        for k in range(nspec):
            kind = spec_kind[k]
            if kind == TIME:
                width = spec_int[k]
                if bar_int[s, k, B_TRADES] > 0:
                    open_start = bar_int[s, k, B_START]
                    if open_start <= ev and ev - open_start < width:  # the open bar (no division)
                        _apply(bar_int, bar_float, s, k, price, size, notional, ev, recv)
                        continue
                    start = ev - ev % width
                    if start < open_start:
                        late = True
                        mask |= 1 << k
                        late_by_spec[k] += 1
                        continue
                    _emit(bar_int, bar_float, out_int, out_float, row, s, k, open_start + width)
                    row += 1
                    bar_int[s, k, B_WM] = open_start + width
                elif ev < bar_int[s, k, B_WM]:
                    late = True
                    mask |= 1 << k
                    late_by_spec[k] += 1
                    continue
                else:
                    start = ev - ev % width
                wm = bar_int[s, k, B_WM]
                if emit_empty and wm != NO_WATERMARK and start > wm:
                    gap = (start - wm) // width
                    n_emit = min(gap, max_empty)
                    counts[2] += gap - n_emit
                    if n_emit > 0:
                        counts[1] += n_emit
                        close = bar_int[s, k, B_CLOSE]
                        _write_row(out_int, out_float, row, s, k, wm, wm + width, close, close, close, close, 0,
                                   bar_int[s, k, B_LAST_EV], bar_int[s, k, B_LAST_RECV], n_emit, 0.0, close / 1e9)
                        row += 1
                bar_int[s, k, B_START] = start
                _apply(bar_int, bar_float, s, k, price, size, notional, ev, recv)
            else:
                if bar_int[s, k, B_TRADES] == 0:
                    bar_int[s, k, B_START] = ev
                _apply(bar_int, bar_float, s, k, price, size, notional, ev, recv)
                if kind == TICKS:
                    done = bar_int[s, k, B_TRADES] >= spec_int[k]
                elif kind == VOLUME:
                    done = bar_float[s, k, B_VOL] >= spec_float[k]
                else:
                    done = bar_float[s, k, B_NOTIONAL] >= spec_float[k]
                if done:
                    _emit(bar_int, bar_float, out_int, out_float, row, s, k, ev)
                    row += 1
        late_mask[j] = mask
        if late:
            counts[0] += 1
    return row


@numba.njit(cache=True, nogil=True, error_model="numpy")
def close_due(nsym, spec_kind, spec_int, delay, clock, bar_int, bar_float, out_int, out_float):
    """Live: close every open time bar whose ``end + delay <= clock[s]`` (its symbol's clock);
    rows by symbol, then spec."""
    row = 0
    for s in range(nsym):
        for k in range(spec_kind.shape[0]):
            if spec_kind[k] != TIME or bar_int[s, k, B_TRADES] == 0:
                continue
            end = bar_int[s, k, B_START] + spec_int[k]
            if end + delay <= clock[s]:
                _emit(bar_int, bar_float, out_int, out_float, row, s, k, end)
                bar_int[s, k, B_WM] = end
                row += 1
    return row


@numba.njit(cache=True, nogil=True, error_model="numpy")
def flush_bars(nsym, spec_kind, spec_int, bar_int, bar_float, out_int, out_float):
    """Close every open bar (clean stop); rows by symbol, then spec.

    A flushed time bar keeps its interval's bounds (replay of a file gives the same last
    bar as a batch computation); its interval still counts as closed, so later trades in it
    are late. How far it got shows in its `ts_event` (the last trade).
    """
    row = 0
    for s in range(nsym):
        for k in range(spec_kind.shape[0]):
            if bar_int[s, k, B_TRADES] == 0:
                continue
            if spec_kind[k] == TIME:
                _emit(bar_int, bar_float, out_int, out_float, row, s, k, bar_int[s, k, B_START] + spec_int[k])
                bar_int[s, k, B_WM] = bar_int[s, k, B_START] + spec_int[k]
            else:
                _emit(bar_int, bar_float, out_int, out_float, row, s, k, bar_int[s, k, B_LAST_EV])
            row += 1
    return row
