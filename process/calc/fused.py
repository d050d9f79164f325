"""A batch of trades through every trade-driven calculator in one compiled call.

`CalculatorSet.on_batch` used to call seven kernels (a kind check, select, bars, their
payloads, the revision ring, the trade recurrences, their payloads), each from Python glue. At batch 1024
that glue cost as much as the kernels: numba unboxes every array argument (~0.3 us each, ~100
of them per batch). `run_batch` runs the same kernels in one call, and takes the state arrays,
which change only when symbols are added, a checkpoint is loaded or a scratch array grows,
as one `Table`: an int64 array of their addresses and shapes (the `Table` holds the arrays, so
the addresses stay valid), rebuilt by the set when any of them is replaced.

The kernels it calls live in `batch`, `bar_kernels`, `revisions`, `trade_kernels` and
`encode` (`_CALLEES`); numba's cache checks only this file, so `run_batch` is made by `_make`
with a digest of their sources as a closure value, which numba's cache key includes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from streamctl.process.calc import bar_kernels, batch, encode, revisions, trade_kernels
from streamctl.process.calc.bar_kernels import update_bars
from streamctl.process.calc.batch import select
from streamctl.process.calc.encode import pack_bars, pack_series
from streamctl.process.calc.revisions import _record
from streamctl.process.calc.trade_kernels import P_VWAP, collect, update_trades

__all__ = ["SLOTS", "Table", "run_batch", "OK", "VOIDS", "NEED_BOUNDS", "ANOMALIES", "FRESH", "SPLIT", "RESUME",
           "SERIES", "R_TRADES", "R_QUOTES", "R_BOOK", "R_BAD", "R_TMIN", "R_TMAX", "R_ANOMALIES", "R_TOUCHED",
           "N_RESULTS",
           "C_NSYM", "C_CHECK_QUOTES", "C_EMIT_EMPTY", "C_MAX_EMPTY", "C_REV_CAP", "C_VWAP_WINDOW", "C_PUBLISH",
           "C_VWAP", "C_NSMA", "C_BAR_BOUND", "C_VWAP_BOUND", "C_IND_BOUND", "N_CONFIG"]

OK, VOIDS, NEED_BOUNDS, ANOMALIES = 0, 1, 2, 3
"""`run_batch`'s status: done; the batch holds corrections or cancels (nothing was done: split
them off and call again with `SPLIT`); the trades leave the session bounds (only `select` ran:
set the bounds and call again with `RESUME`); the batch has anomaly rows or flagged quotes
(its bars are written: append the anomalies, then call again with `SERIES` for the Vwap and
Indicator messages, which go after them)."""
FRESH, SPLIT, RESUME, SERIES = 0, 1, 2, 3
"""`run_batch`'s ``stage``: a new batch; one without its corrections and cancels; the same
batch again after `NEED_BOUNDS` (`select` is not run twice); its series after `ANOMALIES`."""

R_TRADES, R_QUOTES, R_BOOK, R_BAD, R_TMIN, R_TMAX, R_ANOMALIES, R_TOUCHED = range(8)
N_RESULTS = 8
"""``result`` slots: `select`'s six values, then the anomaly rows and the symbols with trades."""

C_NSYM, C_CHECK_QUOTES, C_EMIT_EMPTY, C_MAX_EMPTY, C_REV_CAP, C_VWAP_WINDOW, C_PUBLISH, C_VWAP, C_NSMA, \
    C_BAR_BOUND, C_VWAP_BOUND, C_IND_BOUND = range(12)
N_CONFIG = 12
"""``config`` slots: symbols, the settings the kernels take, and the most bytes of one Bar,
Vwap and Indicator message (0 for no revision ring, no bars)."""

SLOTS: tuple[tuple[str, np.dtype, int], ...] = tuple((name, np.dtype(dtype), ndim) for name, dtype, ndim in (
    ("config", np.int64, 1), ("result", np.int64, 1),
    ("trade_rows", np.int64, 1), ("quote_rows", np.int64, 1), ("counts", np.int64, 1), ("first_bad", np.int64, 1),
    ("spec_kind", np.int64, 1), ("spec_int", np.int64, 1), ("spec_float", np.float64, 1),
    ("bar_int", np.int64, 3), ("bar_float", np.float64, 3), ("bar_out_int", np.int64, 2),
    ("bar_out_float", np.float64, 2), ("late_by_spec", np.int64, 1), ("bar_counts", np.int64, 1),
    ("late_mask", np.int64, 1), ("bar_tid", np.int64, 2), ("label_data", np.uint8, 1), ("label_ends", np.int64, 1),
    ("r_sym", np.int32, 1), ("r_tid", np.uint64, 1), ("r_ts", np.int64, 1), ("r_recv", np.int64, 1),
    ("r_price", np.int64, 1), ("r_size", np.float64, 1), ("r_late", np.int64, 1), ("r_evicted", np.int64, 1),
    ("params_int", np.int64, 1), ("params_float", np.float64, 1), ("sma_n", np.int64, 1),
    ("ema_alpha", np.float64, 1), ("ema_decay", np.float64, 1), ("bounds", np.int64, 1),
    ("ring_price", np.int64, 2), ("ring_pv_vol", np.float64, 3), ("state_int", np.int64, 2),
    ("state_float", np.float64, 2), ("z_sum_sq", np.uint64, 2), ("sma", np.int64, 2), ("ema", np.float64, 2),
    ("iqr_sorted", np.int64, 2), ("touched", np.int64, 1), ("anomaly_int", np.int64, 2),
    ("anomaly_float", np.float64, 2), ("trade_counts", np.int64, 1), ("values_int", np.int64, 2),
    ("values_float", np.float64, 2), ("series_tid", np.int64, 2), ("spans", np.int64, 1),
    ("heads", np.uint8, 1), ("head_ends", np.int64, 1),
    ("src", np.uint8, 1), ("sym_data", np.uint8, 1), ("sym_ends", np.int64, 1),
))
"""Every array `run_batch` reads from its `Table`: name, dtype, dimensions (C order)."""
_SLOT = {name: k for k, (name, _, _) in enumerate(SLOTS)}
(T_CONFIG, T_RESULT, T_TRADE_ROWS, T_QUOTE_ROWS, T_COUNTS, T_FIRST_BAD, T_SPEC_KIND, T_SPEC_INT, T_SPEC_FLOAT,
 T_BAR_INT, T_BAR_FLOAT, T_BAR_OUT_INT, T_BAR_OUT_FLOAT, T_LATE_BY_SPEC, T_BAR_COUNTS, T_LATE_MASK, T_BAR_TID,
 T_LABEL_DATA, T_LABEL_ENDS, T_R_SYM, T_R_TID, T_R_TS, T_R_RECV, T_R_PRICE, T_R_SIZE, T_R_LATE, T_R_EVICTED,
 T_PARAMS_INT, T_PARAMS_FLOAT, T_SMA_N, T_EMA_ALPHA, T_EMA_DECAY, T_BOUNDS, T_RING_PRICE, T_RING_PV_VOL,
 T_STATE_INT, T_STATE_FLOAT, T_Z_SUM_SQ, T_SMA, T_EMA, T_IQR_SORTED, T_TOUCHED, T_ANOMALY_INT, T_ANOMALY_FLOAT,
 T_TRADE_COUNTS, T_VALUES_INT, T_VALUES_FLOAT, T_SERIES_TID, T_SPANS, T_HEADS, T_HEAD_ENDS, T_SRC, T_SYM_DATA,
 T_SYM_ENDS) = range(len(SLOTS))


class Table:
    """The arrays of `SLOTS` as one int64 array, row ``k``: address, then the shape (3 axes,
    unused ones 0). It holds the arrays, so their memory outlives every call that reads it."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        if set(arrays) != set(_SLOT):
            raise ValueError(f"a Table needs arrays {sorted(_SLOT)}; missing {sorted(set(_SLOT) - set(arrays))}, "
                             f"unknown {sorted(set(arrays) - set(_SLOT))}")
        self.arrays = arrays
        self.rows = np.zeros((len(SLOTS), 4), dtype=np.int64)
        for k, (name, dtype, ndim) in enumerate(SLOTS):
            array = arrays[name]
            if array.dtype != dtype or array.ndim != ndim or not array.flags.c_contiguous:
                raise ValueError(f"table array `{name}` must be C-contiguous {dtype} with {ndim} axes; was "
                                 f"{array.dtype} {array.shape}{'' if array.flags.c_contiguous else ' (strided)'}")
            self.rows[k, 0] = array.ctypes.data
            self.rows[k, 1:1 + ndim] = array.shape


# --------------------------------------------------------------------------- compiled


def _pointer_typed(typingctx: Any, address: types.Integer, like: types.Number) -> Any:
    """``_pointer(address, like)``: a pointer to values of `like`'s type at `address`."""
    pointer = types.CPointer(like)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(pointer))
    return pointer(address, like), codegen


_pointer: Any = intrinsic(_pointer_typed)
_I64, _F64, _U64, _I32, _U8 = np.int64(0), np.float64(0), np.uint64(0), np.int32(0), np.uint8(0)
"""Element types for `_vector`, `_matrix`, `_cube` (numba types a global scalar by its own type)."""


@numba.njit(cache=True, nogil=True, inline="always")
def _vector(t, k, like):
    """Table row `k` as a 1-D array of `like`'s type."""
    return numba.carray(_pointer(t[k, 0], like), t[k, 1])


@numba.njit(cache=True, nogil=True, inline="always")
def _matrix(t, k, like):
    return numba.carray(_pointer(t[k, 0], like), (t[k, 1], t[k, 2]))


@numba.njit(cache=True, nogil=True, inline="always")
def _cube(t, k, like):
    return numba.carray(_pointer(t[k, 0], like), (t[k, 1], t[k, 2], t[k, 3]))


@numba.njit(cache=True, nogil=True)
def _room(data, index, size, count, nbytes, messages):
    """`data` and `index` with room for `messages` more messages of `nbytes` bytes (grown to at
    least twice their size when they must grow, the first `size` bytes and `count` rows kept)."""
    if size + nbytes > data.shape[0]:
        grown = np.empty(max(size + nbytes, 2 * data.shape[0]), dtype=np.uint8)
        grown[:size] = data[:size]
        data = grown
    if count + messages > index.shape[0]:
        rows = np.empty((max(count + messages, 2 * index.shape[0]), 3), dtype=np.int64)
        rows[:count] = index[:count]
        index = rows
    return data, index


def _make(sources: str) -> Any:
    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def run_batch(t, rows_int, rows_float, sym, seqs, data, index, size, count, stamp, rev_next, stage):
        """Select, bars and their messages, the revision ring, the trade recurrences and their
        messages for one batch (`CalculatorSet.on_batch` steps 1 and 3; the caller writes the
        anomalies, between, when the status is `ANOMALIES`, and the book). Returns ``(status,
        data, index, size, count)``: the message buffers (grown when they had to) and how much of
        them is used; ``result`` (`R_*`) says the rest."""
        assert len(sources) > 0  # the callees' source digest: part of this kernel's cache key
        config = _vector(t, T_CONFIG, _I64)
        result = _vector(t, T_RESULT, _I64)
        trades = _vector(t, T_TRADE_ROWS, _I64)
        params_int = _vector(t, T_PARAMS_INT, _I64)
        sma_n = _vector(t, T_SMA_N, _I64)
        ring_pv_vol = _cube(t, T_RING_PV_VOL, _F64)
        state_int, state_float = _matrix(t, T_STATE_INT, _I64), _matrix(t, T_STATE_FLOAT, _F64)
        sma, ema, touched = _matrix(t, T_SMA, _I64), _matrix(t, T_EMA, _F64), _vector(t, T_TOUCHED, _I64)
        if stage == FRESH or stage == SPLIT:
            nt, nq, nb, nbad, tmin, tmax = select(
                rows_int, rows_float, sym, config[C_NSYM], config[C_CHECK_QUOTES] != 0, stage == FRESH, trades,
                _vector(t, T_QUOTE_ROWS, _I64), _vector(t, T_COUNTS, _I64), _vector(t, T_FIRST_BAD, _I64))
            if nt < 0:
                return VOIDS, data, index, size, count
            result[R_TRADES], result[R_QUOTES], result[R_BOOK], result[R_BAD] = nt, nq, nb, nbad
            result[R_TMIN], result[R_TMAX] = tmin, tmax
        n_trades = result[R_TRADES]
        if stage != SERIES:
            result[R_ANOMALIES], result[R_TOUCHED] = 0, 0
            if n_trades == 0:
                return ANOMALIES if result[R_QUOTES] else OK, data, index, size, count
            bounds = _vector(t, T_BOUNDS, _I64)
            if params_int[P_VWAP] != 0 and not (bounds[0] <= result[R_TMIN] and result[R_TMAX] < bounds[-1]):
                return NEED_BOUNDS, data, index, size, count
            spec_kind = _vector(t, T_SPEC_KIND, _I64)
            late_mask = _vector(t, T_LATE_MASK, _I64)
            if spec_kind.shape[0] > 0:
                bar_counts = _vector(t, T_BAR_COUNTS, _I64)
                empty_before = bar_counts[1]
                out_int, out_float = _matrix(t, T_BAR_OUT_INT, _I64), _matrix(t, T_BAR_OUT_FLOAT, _F64)
                spec_int = _vector(t, T_SPEC_INT, _I64)
                rows = update_bars(rows_int, rows_float, sym, trades, n_trades, spec_kind, spec_int,
                                   _vector(t, T_SPEC_FLOAT, _F64), config[C_EMIT_EMPTY] != 0, config[C_MAX_EMPTY],
                                   _cube(t, T_BAR_INT, _I64), _cube(t, T_BAR_FLOAT, _F64), out_int, out_float,
                                   _vector(t, T_LATE_BY_SPEC, _I64), bar_counts, late_mask)
                if rows:
                    messages = rows + bar_counts[1] - empty_before  # a run of empty bars is one row
                    data, index = _room(data, index, size, count, messages * config[C_BAR_BOUND], messages)
                    size, count = pack_bars(
                        data, size, index, count, seqs, out_int, out_float, rows, _matrix(t, T_BAR_TID, _I64),
                        spec_int, _vector(t, T_SRC, _U8), _vector(t, T_SYM_DATA, _U8), _vector(t, T_SYM_ENDS, _I64),
                        _vector(t, T_LABEL_DATA, _U8), _vector(t, T_LABEL_ENDS, _I64))
            if config[C_REV_CAP] > 0:
                _record(rows_int, rows_float, sym, trades[:n_trades], late_mask[:n_trades], rev_next,
                        config[C_REV_CAP], _vector(t, T_R_SYM, _I32), _vector(t, T_R_TID, _U64),
                        _vector(t, T_R_TS, _I64), _vector(t, T_R_RECV, _I64), _vector(t, T_R_PRICE, _I64),
                        _vector(t, T_R_SIZE, _F64), _vector(t, T_R_LATE, _I64), _vector(t, T_R_EVICTED, _I64))
            n_touch, n_anomalies = update_trades(
                rows_int, rows_float, sym, trades, n_trades, stamp, params_int, _vector(t, T_PARAMS_FLOAT, _F64),
                sma_n, _vector(t, T_EMA_ALPHA, _F64), _vector(t, T_EMA_DECAY, _F64), bounds,
                _matrix(t, T_RING_PRICE, _I64), ring_pv_vol, state_int, state_float, _matrix(t, T_Z_SUM_SQ, _U64), sma,
                ema, _matrix(t, T_IQR_SORTED, _I64), touched, _matrix(t, T_ANOMALY_INT, _I64),
                _matrix(t, T_ANOMALY_FLOAT, _F64), _vector(t, T_TRADE_COUNTS, _I64))
            result[R_ANOMALIES], result[R_TOUCHED] = n_anomalies, n_touch
            if n_anomalies or result[R_QUOTES]:
                return ANOMALIES, data, index, size, count
        n_touch = result[R_TOUCHED]
        if config[C_PUBLISH] == 0 or n_touch == 0:
            return OK, data, index, size, count
        values_int, values_float = _matrix(t, T_VALUES_INT, _I64), _matrix(t, T_VALUES_FLOAT, _F64)
        collect(touched, n_touch, params_int[trade_kernels.P_RING_SIZE], config[C_VWAP_WINDOW], sma_n, ring_pv_vol,
                state_int, state_float, sma, ema, values_int, values_float)
        spans = _vector(t, T_SPANS, _I64)
        vwaps = n_touch if config[C_VWAP] != 0 else 0
        indicators = n_touch * spans.shape[0]
        data, index = _room(data, index, size, count,
                            vwaps * config[C_VWAP_BOUND] + indicators * config[C_IND_BOUND], vwaps + indicators)
        size, count = pack_series(data, size, index, count, seqs, values_int, values_float, n_touch,
                                  _matrix(t, T_SERIES_TID, _I64), config[C_VWAP] != 0, spans, config[C_NSMA],
                                  _vector(t, T_HEADS, _U8), _vector(t, T_HEAD_ENDS, _I64))
        return OK, data, index, size, count
    return run_batch


_CALLEES = (bar_kernels, batch, encode, revisions, trade_kernels)
"""The modules whose kernels `run_batch` calls (their compiled code is embedded in its own)."""


def _sources_digest() -> str:
    """sha256 of the sources of `_CALLEES`."""
    digest = hashlib.sha256()
    for module in _CALLEES:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


run_batch = _make(_sources_digest())
