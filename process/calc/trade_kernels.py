"""The trade-driven recurrences, compiled with numba: VWAPs, SMA, EMA and the z-score, jump and
IQR rules.

One pass over a batch's valid trades in arrival order, late trades included (these series
are trade-driven, not interval-driven). Per-symbol state (first axis: local symbol index):

- ``ring_price`` (int64 prices) and ``ring_pv_vol`` (price*size, size) hold the last
  ``ring_size`` trades (a power of two, at least every window below);
- ``state_int`` int64 columns `S_*`; ``state_float`` float64 columns `F_*` (session notional
  and volume);
- ``z_sum_sq`` the exact 128-bit sum of squared prices of the z-score window (``(hi, lo)``);
- ``sma`` exact int64 window sums; ``ema`` the EMA values;
- ``iqr_sorted`` the prices of the IQR window, kept sorted (the first ``min(n, window)``
  entries are in use).

Exactness: SMA and z-score sums are integers (exact, independent of batch splits); the EMA
is ``ema_decay * ema + alpha * price`` with ``ema_decay = 1 - alpha`` (skipped when equal, as
pandas ``ewm(adjust=False)``); session sums are sequential float sums; the rolling VWAP is
recomputed from the ring at publish time as sequential sums over the window, oldest first
(`collect`); the IQR quartiles are numpy's default (linear) quantiles of the sorted window.

Every numba function a kernel here calls is defined in this module (numba's on-disk cache
only notices changes to the kernel's own file); the column constants imported from `batch`
are fixed by the record contract.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from streamctl.process.calc.batch import PRICE, SIZE, TS_EVENT, TS_RECV

__all__ = [
    "S_NTR", "S_LAST_EV", "S_LAST_RECV", "S_SESS_START", "S_SESS_NEXT", "S_SUM1", "S_ZOFF", "S_STAMP", "NS_I",
    "F_SESS_PV", "F_SESS_VOL", "NS_F",
    "P_RING_SIZE", "P_JUMP", "P_Z", "P_ZW", "P_ZLIM", "P_VWAP", "P_IQR", "P_IQRW", "NP_I",
    "PF_JUMP", "PF_ZTHR", "PF_IQRK", "NP_F",
    "A_REC", "A_SYM", "A_RULE", "A_PRICE", "A_EV", "A_RECV", "NA_I", "AF_VALUE", "AF_AUX1", "AF_AUX2", "NA_F",
    "RULE_ZSCORE", "RULE_JUMP", "RULE_CROSSED", "RULE_LOCKED", "RULE_IQR", "RULES_PER_TRADE", "NO_SESSION",
    "update_trades", "collect",
    "mul64", "add128", "sub128", "mul128_64", "to_float",
]

S_NTR, S_LAST_EV, S_LAST_RECV, S_SESS_START, S_SESS_NEXT, S_SUM1, S_ZOFF, S_STAMP = range(8)
NS_I = 8
"""``state_int`` columns: trades so far, last ts_event and ts_recv, current and next session
start, z-score window sum, z-score disabled, batch stamp of the last touch."""
F_SESS_PV, F_SESS_VOL = 0, 1
NS_F = 2
P_RING_SIZE, P_JUMP, P_Z, P_ZW, P_ZLIM, P_VWAP, P_IQR, P_IQRW = range(8)
NP_I = 8
"""``params_int``: ring size, jump on, z-score on, its window and price limit, VWAP on, IQR on,
its window."""
PF_JUMP, PF_ZTHR, PF_IQRK = 0, 1, 2
NP_F = 3
"""``params_float``: jump percent, z-score threshold, IQR `k`."""
A_REC, A_SYM, A_RULE, A_PRICE, A_EV, A_RECV = range(6)
NA_I = 6
AF_VALUE, AF_AUX1, AF_AUX2 = 0, 1, 2
NA_F = 3
RULE_ZSCORE, RULE_JUMP, RULE_CROSSED, RULE_LOCKED, RULE_IQR = 0, 1, 2, 3, 4
"""Anomaly rules; on one trade they fire in the order z-score, jump, IQR."""
RULES_PER_TRADE = 3
NO_SESSION = np.int64(np.iinfo(np.int64).min)
_TWO64 = 2.0**64


# --------------------------------------------------------------------------- exact 128-bit integers
# The z-score's window sums are integers, so they never drift and never depend on how ticks
# were split into batches: the sum of prices fits an int64, the sum of squared prices needs
# 128 bits, kept as a pair (hi, lo) of uint64. Only what the z-score needs exists, and every
# operation assumes its result fits. `to_float` rounds to nearest, ties to even, exactly like
# Python's float(int), so a reference written with Python integers reproduces it bit for bit.
# (These live here, not in their own module, because numba's cache does not notice changes
# in another module's functions that a cached kernel inlined.)

_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_SHIFTS = (np.uint64(32), np.uint64(16), np.uint64(8), np.uint64(4), np.uint64(2), np.uint64(1))
_POW2 = np.array([2.0**k for k in range(65)])  # exact powers of two


def _wide_product_typed(typingctx: Any, a: types.Integer, b: types.Integer) -> Any:
    """``(hi, lo)`` of the 128-bit product of two uint64: one LLVM ``mul i128``, which x86-64
    does in one instruction (four 32-bit partial products took ~14 operations)."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        hi = builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))
        return context.make_tuple(builder, signature.return_type, (hi, builder.trunc(product, ir.IntType(64))))
    return types.UniTuple(types.uint64, 2)(types.uint64, types.uint64), codegen


_wide_product: Any = intrinsic(_wide_product_typed)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def mul64(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Full product of two uint64 as ``(hi, lo)``."""
    return _wide_product(a, b)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def add128(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a + b`` (no overflow past 128 bits)."""
    lo = al + bl
    carry = _ONE if lo < al else _ZERO
    return ah + bh + carry, lo


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def sub128(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a - b`` for ``a >= b``."""
    borrow = _ONE if al < bl else _ZERO
    return ah - bh - borrow, al - bl


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def mul128_64(ah: np.uint64, al: np.uint64, w: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a * w`` (the product must fit in 128 bits)."""
    carry, lo = mul64(al, w)
    return ah * w + carry, lo


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bit_length(x: np.uint64) -> np.uint64:
    n = _ZERO
    for shift in _SHIFTS:
        if (x >> shift) != _ZERO:
            x >>= shift
            n += shift
    return n + x  # x is 0 or 1 here


@numba.njit(cache=True, nogil=True, error_model="numpy")
def to_float(hi: np.uint64, lo: np.uint64) -> float:
    """The float nearest to ``hi * 2**64 + lo`` (ties to even)."""
    if hi == _ZERO:
        return np.float64(lo)
    s = _bit_length(hi)  # 1..64: the value has 64 + s bits
    if s == np.uint64(64):
        top = hi
        sticky = lo != _ZERO
    else:
        top = (hi << (np.uint64(64) - s)) | (lo >> s)
        sticky = (lo & ((_ONE << s) - _ONE)) != _ZERO
    if sticky:
        top |= _ONE  # below the rounding bit: keeps round-to-nearest-even correct
    return np.float64(top) * _POW2[s]


# --------------------------------------------------------------------------- the IQR window
# The last `window` prices of a symbol, kept sorted: each trade replaces the oldest price by
# the newest, moving only the entries between the two, so the quartiles are two lookups.
# (Binary searches for both places plus a copy loop measured ~20% slower on price walks.)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sorted_insert(window, count, price):
    """Insert `price` into the sorted first `count` entries of `window` (room for one more)."""
    k = count
    while k > 0 and window[k - 1] > price:
        window[k] = window[k - 1]
        k -= 1
    window[k] = price


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sorted_replace(window, old, price):
    """Replace an entry equal to `old` in the sorted `window` by `price`, keeping it sorted."""
    k = np.searchsorted(window, old)
    if price < old:  # with `old` out, slot k is free after the sorted entries before it
        _sorted_insert(window, k, price)
        return
    while k + 1 < window.shape[0] and window[k + 1] < price:
        window[k] = window[k + 1]
        k += 1
    window[k] = price


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _quantile(window, index, t):
    """numpy's default (``method="linear"``) quantile of a sorted int64 window whose virtual
    index is ``index + t`` (``0 <= t < 1``), computed the way numpy computes it for int64 data."""
    below = window[index]
    diff = np.float64(window[min(index + 1, window.shape[0] - 1)] - below)
    if t >= 0.5:
        return np.float64(window[min(index + 1, window.shape[0] - 1)]) - diff * (1.0 - t)
    return np.float64(below) + diff * t


# --------------------------------------------------------------------------- the trade pass


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _anomaly(anomaly_int, anomaly_float, row, i, s, rule, price, ev, recv, value, aux1, aux2):
    anomaly_int[row, A_REC] = i
    anomaly_int[row, A_SYM] = s
    anomaly_int[row, A_RULE] = rule
    anomaly_int[row, A_PRICE] = price
    anomaly_int[row, A_EV] = ev
    anomaly_int[row, A_RECV] = recv
    anomaly_float[row, AF_VALUE] = value
    anomaly_float[row, AF_AUX1] = aux1
    anomaly_float[row, AF_AUX2] = aux2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def update_trades(rows_int, rows_float, sym, trades, n_trades, stamp, params_int, params_float, sma_n, ema_alpha,
                  ema_decay, bounds, ring_price, ring_pv_vol, state_int, state_float, z_sum_sq, sma, ema,
                  iqr_sorted, touched, anomaly_int, anomaly_float, counts):
    """Apply `n_trades` trades; returns ``(n_touched, n_anomalies)``.

    ``counts[0]`` counts symbols whose z-score was disabled (a price beyond the exact range).

    `touched` receives each symbol with a trade in this batch once (first-touch order);
    `anomaly_int`/`anomaly_float` receive anomaly rows (z-score, jump, IQR for one trade) and
    need room for ``RULES_PER_TRADE * n_trades`` rows. `bounds` must bracket every trade's
    ts_event (`SessionClock.cover`).
    """
    mask = params_int[P_RING_SIZE] - 1  # a power of two: the slot of a symbol's trade n is n & mask
    do_jump = params_int[P_JUMP] != 0
    do_z = params_int[P_Z] != 0
    z_window = params_int[P_ZW]
    z_window_u = np.uint64(z_window)
    z_price_limit = params_int[P_ZLIM]
    do_vwap = params_int[P_VWAP] != 0
    do_iqr = params_int[P_IQR] != 0
    iqr_window = params_int[P_IQRW]
    # numpy's linear quantiles sit at virtual index (window - 1) * q: integer part and fraction.
    q1_index, q1_t = (iqr_window - 1) // 4, ((iqr_window - 1) % 4) / 4.0
    q3_index, q3_t = 3 * (iqr_window - 1) // 4, (3 * (iqr_window - 1) % 4) / 4.0
    jump_pct = params_float[PF_JUMP]
    z_threshold = params_float[PF_ZTHR]
    z_threshold_sq = z_threshold * z_threshold * (1.0 - 1e-9)
    iqr_k = params_float[PF_IQRK]
    n_touch = 0
    n_anomalies = 0
    for j in range(n_trades):
        # The same record read as `bar_kernels.update_bars`: numba's cache would not see a
        # change to a shared helper in another module, so each kernel module reads it itself.
        i = trades[j]
        s = sym[i]
        price = rows_int[i, PRICE]
        size = rows_float[i, SIZE]
        ev = rows_int[i, TS_EVENT]
        recv = rows_int[i, TS_RECV]
        px = price / 1e9
        notional = px * size
        n = state_int[s, S_NTR]
        if state_int[s, S_STAMP] != stamp:
            state_int[s, S_STAMP] = stamp
            touched[n_touch] = s
            n_touch += 1
        if do_z and state_int[s, S_ZOFF] == 0:
            if price > z_price_limit or price < -z_price_limit:
                state_int[s, S_ZOFF] = 1
                counts[0] += 1
            else:
                z_sum = state_int[s, S_SUM1]
                if n >= z_window:
                    # W * S2 - S1^2 (= W^2 * population variance), exact in 128 bits
                    var_hi, var_lo = mul128_64(z_sum_sq[s, 0], z_sum_sq[s, 1], z_window_u)
                    abs_sum = np.uint64(abs(z_sum))
                    sq_hi, sq_lo = mul64(abs_sum, abs_sum)
                    var_hi, var_lo = sub128(var_hi, var_lo, sq_hi, sq_lo)
                    numer = np.float64(z_window * price - z_sum)
                    # Cheap screen: |z| is certainly below the threshold (margin 1e-9, far above
                    # the rounding of either side), so the exact z is not needed.
                    rough = np.float64(var_hi) * _TWO64 + np.float64(var_lo)
                    if numer * numer >= z_threshold_sq * rough:
                        var = to_float(var_hi, var_lo)  # W^2 * population variance, in price units^2
                        if var > 0.0:
                            z = numer / math.sqrt(var)
                            if abs(z) > z_threshold:
                                _anomaly(anomaly_int, anomaly_float, n_anomalies, i, s, RULE_ZSCORE, price, ev,
                                         recv, z, np.float64(z_sum) / z_window / 1e9,
                                         math.sqrt(var) / z_window / 1e9)
                                n_anomalies += 1
                abs_price = np.uint64(abs(price))
                sq_hi, sq_lo = mul64(abs_price, abs_price)
                z_sum_sq[s, 0], z_sum_sq[s, 1] = add128(z_sum_sq[s, 0], z_sum_sq[s, 1], sq_hi, sq_lo)
                z_sum += price
                if n >= z_window:
                    old = ring_price[s, (n - z_window) & mask]
                    abs_old = np.uint64(abs(old))
                    sq_hi, sq_lo = mul64(abs_old, abs_old)
                    z_sum_sq[s, 0], z_sum_sq[s, 1] = sub128(z_sum_sq[s, 0], z_sum_sq[s, 1], sq_hi, sq_lo)
                    z_sum -= old
                state_int[s, S_SUM1] = z_sum
        if do_jump and n > 0:
            prev = ring_price[s, (n - 1) & mask]
            if prev != 0:
                move = 100.0 * np.float64(price - prev) / np.float64(abs(prev))
                if abs(move) > jump_pct:
                    _anomaly(anomaly_int, anomaly_float, n_anomalies, i, s, RULE_JUMP, price, ev, recv, move,
                             prev / 1e9, 0.0)
                    n_anomalies += 1
        if do_iqr:
            window = iqr_sorted[s]
            if n >= iqr_window:
                q1 = _quantile(window, q1_index, q1_t)
                q3 = _quantile(window, q3_index, q3_t)
                spread = q3 - q1
                if spread > 0.0:
                    fprice = np.float64(price)
                    if fprice < q1 - iqr_k * spread or fprice > q3 + iqr_k * spread:
                        value = (fprice - q1) / spread if fprice < q1 else (fprice - q3) / spread
                        _anomaly(anomaly_int, anomaly_float, n_anomalies, i, s, RULE_IQR, price, ev, recv, value,
                                 q1 / 1e9, q3 / 1e9)
                        n_anomalies += 1
                _sorted_replace(window, ring_price[s, (n - iqr_window) & mask], price)
            else:
                _sorted_insert(window, n, price)
        for k in range(sma_n.shape[0]):
            sma[s, k] += price
            if n >= sma_n[k]:
                sma[s, k] -= ring_price[s, (n - sma_n[k]) & mask]
        for k in range(ema_alpha.shape[0]):
            if n == 0:
                ema[s, k] = px
            elif ema[s, k] != px:
                ema[s, k] = ema_decay[k] * ema[s, k] + ema_alpha[k] * px
        if do_vwap:
            if ev >= state_int[s, S_SESS_NEXT]:
                b = np.searchsorted(bounds, ev, side="right") - 1
                state_int[s, S_SESS_START] = bounds[b]
                state_int[s, S_SESS_NEXT] = bounds[b + 1]
                state_float[s, F_SESS_PV] = 0.0
                state_float[s, F_SESS_VOL] = 0.0
            state_float[s, F_SESS_PV] += notional
            state_float[s, F_SESS_VOL] += size
        slot = n & mask
        ring_price[s, slot] = price
        ring_pv_vol[s, slot, 0] = notional
        ring_pv_vol[s, slot, 1] = size
        state_int[s, S_NTR] = n + 1
        state_int[s, S_LAST_EV] = ev
        state_int[s, S_LAST_RECV] = recv
    return n_touch, n_anomalies


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _window_sums4(ring_pv_vol, syms, first, count, mask, j, values_float):
    """Rolling VWAP of symbols j..j+3 (same window length): four symbols' sequential sums
    advance together so their independent add chains overlap in the CPU."""
    a, b, c, d = syms[j], syms[j + 1], syms[j + 2], syms[j + 3]
    fa, fb, fc, fd = first[j], first[j + 1], first[j + 2], first[j + 3]
    pa = pb = pc = pd = 0.0
    va = vb = vc = vd = 0.0
    for k in range(count):
        pa += ring_pv_vol[a, (fa + k) & mask, 0]
        va += ring_pv_vol[a, (fa + k) & mask, 1]
        pb += ring_pv_vol[b, (fb + k) & mask, 0]
        vb += ring_pv_vol[b, (fb + k) & mask, 1]
        pc += ring_pv_vol[c, (fc + k) & mask, 0]
        vc += ring_pv_vol[c, (fc + k) & mask, 1]
        pd += ring_pv_vol[d, (fd + k) & mask, 0]
        vd += ring_pv_vol[d, (fd + k) & mask, 1]
    values_float[j, 2] = pa / va
    values_float[j + 1, 2] = pb / vb
    values_float[j + 2, 2] = pc / vc
    values_float[j + 3, 2] = pd / vd


@numba.njit(cache=True, nogil=True, error_model="numpy")
def collect(touched, n_touched, ring_size, vwap_window, sma_n, ring_pv_vol, state_int, state_float, sma, ema,
            values_int, values_float):
    """Values to publish for the symbols of a batch, in ascending local index.

    Row j of ``values_int``: symbol, last ts_event, last ts_recv, session start, trades so far.
    Row j of ``values_float``: session VWAP, session volume, rolling VWAP, then the SMA values
    (NaN while the window is not full), then the EMA values. The rolling VWAP is recomputed
    over the last `vwap_window` trades (fewer if the symbol has fewer): sequential sums of
    price*size and of size, oldest trade first. Returns the number of rows.
    """
    syms = np.sort(touched[:n_touched])
    mask = ring_size - 1
    nsma = sma_n.shape[0]
    first = np.empty(n_touched, dtype=np.int64)
    count = np.empty(n_touched, dtype=np.int64)
    for j in range(n_touched):
        s = syms[j]
        n = state_int[s, S_NTR]
        values_int[j, 0] = s
        values_int[j, 1] = state_int[s, S_LAST_EV]
        values_int[j, 2] = state_int[s, S_LAST_RECV]
        values_int[j, 3] = state_int[s, S_SESS_START]
        values_int[j, 4] = n
        values_float[j, 0] = state_float[s, F_SESS_PV] / state_float[s, F_SESS_VOL]
        values_float[j, 1] = state_float[s, F_SESS_VOL]
        values_float[j, 2] = 0.0
        first[j] = max(0, n - vwap_window)
        count[j] = n - first[j]
        for k in range(nsma):
            values_float[j, 3 + k] = np.float64(sma[s, k]) / (sma_n[k] * 1e9) if n >= sma_n[k] else np.nan
        for k in range(ema.shape[1]):
            values_float[j, 3 + nsma + k] = ema[s, k]
    if vwap_window > 0:
        j = 0
        while j < n_touched:
            if j + 4 <= n_touched and count[j] == count[j + 1] == count[j + 2] == count[j + 3]:
                _window_sums4(ring_pv_vol, syms, first, count[j], mask, j, values_float)
                j += 4
            else:
                pv = 0.0
                vol = 0.0
                for k in range(first[j], first[j] + count[j]):
                    pv += ring_pv_vol[syms[j], k & mask, 0]
                    vol += ring_pv_vol[syms[j], k & mask, 1]
                values_float[j, 2] = pv / vol
                j += 1
    return n_touched
