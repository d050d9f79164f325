"""The trade-driven recurrences, compiled with numba: VWAPs, SMA, EMA, z-score and jump rules.

One pass over a batch's valid trades in arrival order, late trades included (these series
are trade-driven, not interval-driven). Per-symbol state:

- ``ring_p`` (int64 prices) and ``ring_f`` (price*size, size) hold the last ``H`` trades
  (``H`` a power of two);
- ``si`` int64 columns `S_*`, ``sf`` float64 (session notional and volume), ``z2`` the exact
  128-bit sum of squared prices of the z-score window, ``sma`` exact int64 window sums,
  ``ema`` the EMA values.

Exactness: SMA and z-score sums are integers (exact, independent of batch splits); the EMA
is ``om * ema + alpha * price`` (skipped when equal, as pandas ``ewm(adjust=False)``); session
sums are sequential float sums; the rolling VWAP is recomputed from the ring at publish time
as sequential sums over the window, oldest first (`collect`).

Every numba function a kernel here calls is defined in this module (numba's on-disk cache
only notices changes to the kernel's own file); the column constants imported from `batch`
are fixed by the record contract.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from streamctl.process.calc.batch import PRICE, SIZE, TS_EVENT, TS_RECV

__all__ = [
    "S_NTR", "S_LAST_EV", "S_LAST_RECV", "S_SESS_START", "S_SESS_NEXT", "S_SUM1", "S_ZOFF", "S_STAMP", "NS_I",
    "F_SESS_PV", "F_SESS_VOL", "NS_F",
    "P_H", "P_JUMP", "P_Z", "P_ZW", "P_ZLIM", "P_VWAP", "NP_I", "PF_JUMP", "PF_ZTHR", "NP_F",
    "A_REC", "A_SYM", "A_RULE", "A_PRICE", "A_EV", "A_RECV", "NA_I", "AF_VALUE", "AF_AUX1", "AF_AUX2", "NA_F",
    "RULE_ZSCORE", "RULE_JUMP", "RULE_CROSSED", "RULE_LOCKED", "NO_SESSION",
    "update_trades", "collect", "update_and_collect",
    "mul64", "add128", "sub128", "mul128_64", "to_float",
]

S_NTR, S_LAST_EV, S_LAST_RECV, S_SESS_START, S_SESS_NEXT, S_SUM1, S_ZOFF, S_STAMP = range(8)
NS_I = 8
F_SESS_PV, F_SESS_VOL = 0, 1
NS_F = 2
P_H, P_JUMP, P_Z, P_ZW, P_ZLIM, P_VWAP = range(6)
NP_I = 6
PF_JUMP, PF_ZTHR = 0, 1
NP_F = 2
A_REC, A_SYM, A_RULE, A_PRICE, A_EV, A_RECV = range(6)
NA_I = 6
AF_VALUE, AF_AUX1, AF_AUX2 = 0, 1, 2
NA_F = 3
RULE_ZSCORE, RULE_JUMP, RULE_CROSSED, RULE_LOCKED = 0, 1, 2, 3
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

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_SHIFTS = (np.uint64(32), np.uint64(16), np.uint64(8), np.uint64(4), np.uint64(2), np.uint64(1))
_POW2 = np.array([2.0**k for k in range(65)])  # exact powers of two


@numba.njit(cache=True, error_model="numpy", inline="always")
def mul64(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Full product of two uint64 as ``(hi, lo)``."""
    a_lo = a & _M32
    a_hi = a >> _S32
    b_lo = b & _M32
    b_hi = b >> _S32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = (ll >> _S32) + (lh & _M32) + (hl & _M32)
    lo = (mid << _S32) | (ll & _M32)
    hi = hh + (lh >> _S32) + (hl >> _S32) + (mid >> _S32)
    return hi, lo


@numba.njit(cache=True, error_model="numpy", inline="always")
def add128(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a + b`` (no overflow past 128 bits)."""
    lo = al + bl
    carry = _ONE if lo < al else _ZERO
    return ah + bh + carry, lo


@numba.njit(cache=True, error_model="numpy", inline="always")
def sub128(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a - b`` for ``a >= b``."""
    borrow = _ONE if al < bl else _ZERO
    return ah - bh - borrow, al - bl


@numba.njit(cache=True, error_model="numpy", inline="always")
def mul128_64(ah: np.uint64, al: np.uint64, w: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a * w`` (the product must fit in 128 bits)."""
    carry, lo = mul64(al, w)
    return ah * w + carry, lo


@numba.njit(cache=True, error_model="numpy")
def _bit_length(x: np.uint64) -> np.uint64:
    n = _ZERO
    for shift in _SHIFTS:
        if (x >> shift) != _ZERO:
            x >>= shift
            n += shift
    return n + x  # x is 0 or 1 here


@numba.njit(cache=True, error_model="numpy")
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


# --------------------------------------------------------------------------- the trade pass


@numba.njit(cache=True, error_model="numpy", inline="always")
def _anomaly(ai, af, a, i, s, rule, p, t, tr, value, aux1, aux2):
    ai[a, A_REC] = i
    ai[a, A_SYM] = s
    ai[a, A_RULE] = rule
    ai[a, A_PRICE] = p
    ai[a, A_EV] = t
    ai[a, A_RECV] = tr
    af[a, AF_VALUE] = value
    af[a, AF_AUX1] = aux1
    af[a, AF_AUX2] = aux2


@numba.njit(cache=True, error_model="numpy")
def update_trades(ri, rf, sym, trades, n_trades, stamp, ip, fp, sma_n, ema_alpha, ema_om, bounds,
                  ring_p, ring_f, si, sf, z2, sma, ema, touched, ai, af, counts):
    """Apply `n_trades` trades; returns ``(n_touched, n_anomalies)``.

    ``counts[0]`` counts symbols whose z-score was disabled (a price beyond the exact range).

    `touched` receives each symbol with a trade in this batch once (first-touch order);
    `ai`/`af` receive anomaly rows (z-score before jump for one trade) and need room for
    ``2 * n_trades`` rows. `bounds` must bracket every trade's ts_event (`SessionClock.cover`).
    """
    mask = ip[P_H] - 1  # H is a power of two: slot of trade n is n & mask
    do_jump = ip[P_JUMP] != 0
    do_z = ip[P_Z] != 0
    W = ip[P_ZW]
    wu = np.uint64(W)
    zlim = ip[P_ZLIM]
    do_vwap = ip[P_VWAP] != 0
    jump_pct = fp[PF_JUMP]
    zthr = fp[PF_ZTHR]
    zthr2 = zthr * zthr * (1.0 - 1e-9)
    n_touch = 0
    n_an = 0
    for j in range(n_trades):
        i = trades[j]
        s = sym[i]
        p = ri[i, PRICE]
        q = rf[i, SIZE]
        t = ri[i, TS_EVENT]
        tr = ri[i, TS_RECV]
        px = p / 1e9
        pq = px * q
        n = si[s, S_NTR]
        if si[s, S_STAMP] != stamp:
            si[s, S_STAMP] = stamp
            touched[n_touch] = s
            n_touch += 1
        if do_z and si[s, S_ZOFF] == 0:
            if p > zlim or p < -zlim:
                si[s, S_ZOFF] = 1
                counts[0] += 1
            else:
                s1 = si[s, S_SUM1]
                if n >= W:
                    nh, nl = mul128_64(z2[s, 0], z2[s, 1], wu)
                    a1 = np.uint64(abs(s1))
                    qh, ql = mul64(a1, a1)
                    nh, nl = sub128(nh, nl, qh, ql)
                    numer = np.float64(W * p - s1)
                    # Cheap screen: |z| is certainly below the threshold (margin 1e-9, far above
                    # the rounding of either side), so the exact z is not needed.
                    rough = np.float64(nh) * _TWO64 + np.float64(nl)
                    if numer * numer >= zthr2 * rough:
                        var = to_float(nh, nl)  # W^2 * population variance, in price units^2
                        if var > 0.0:
                            z = numer / math.sqrt(var)
                            if abs(z) > zthr:
                                _anomaly(ai, af, n_an, i, s, RULE_ZSCORE, p, t, tr, z,
                                         np.float64(s1) / W / 1e9, math.sqrt(var) / W / 1e9)
                                n_an += 1
                ap = np.uint64(abs(p))
                hh, hl = mul64(ap, ap)
                z2[s, 0], z2[s, 1] = add128(z2[s, 0], z2[s, 1], hh, hl)
                s1 += p
                if n >= W:
                    old = ring_p[s, (n - W) & mask]
                    ao = np.uint64(abs(old))
                    oh, ol = mul64(ao, ao)
                    z2[s, 0], z2[s, 1] = sub128(z2[s, 0], z2[s, 1], oh, ol)
                    s1 -= old
                si[s, S_SUM1] = s1
        if do_jump and n > 0:
            prev = ring_p[s, (n - 1) & mask]
            if prev != 0:
                move = 100.0 * np.float64(p - prev) / np.float64(abs(prev))
                if abs(move) > jump_pct:
                    _anomaly(ai, af, n_an, i, s, RULE_JUMP, p, t, tr, move, prev / 1e9, 0.0)
                    n_an += 1
        for k in range(sma_n.shape[0]):
            sma[s, k] += p
            if n >= sma_n[k]:
                sma[s, k] -= ring_p[s, (n - sma_n[k]) & mask]
        for k in range(ema_alpha.shape[0]):
            if n == 0:
                ema[s, k] = px
            elif ema[s, k] != px:
                ema[s, k] = ema_om[k] * ema[s, k] + ema_alpha[k] * px
        if do_vwap:
            if t >= si[s, S_SESS_NEXT]:
                b = np.searchsorted(bounds, t, side="right") - 1
                si[s, S_SESS_START] = bounds[b]
                si[s, S_SESS_NEXT] = bounds[b + 1]
                sf[s, F_SESS_PV] = 0.0
                sf[s, F_SESS_VOL] = 0.0
            sf[s, F_SESS_PV] += pq
            sf[s, F_SESS_VOL] += q
        slot = n & mask
        ring_p[s, slot] = p
        ring_f[s, slot, 0] = pq
        ring_f[s, slot, 1] = q
        si[s, S_NTR] = n + 1
        si[s, S_LAST_EV] = t
        si[s, S_LAST_RECV] = tr
    return n_touch, n_an


@numba.njit(cache=True, error_model="numpy")
def _window_sums4(ring_f, syms, first, count, mask, j, vf):
    """Rolling VWAP of symbols j..j+3 (same window length): four symbols' sequential sums
    advance together so their independent add chains overlap in the CPU."""
    a, b, c, d = syms[j], syms[j + 1], syms[j + 2], syms[j + 3]
    fa, fb, fc, fd = first[j], first[j + 1], first[j + 2], first[j + 3]
    pa = pb = pc = pd = 0.0
    va = vb = vc = vd = 0.0
    for k in range(count):
        pa += ring_f[a, (fa + k) & mask, 0]
        va += ring_f[a, (fa + k) & mask, 1]
        pb += ring_f[b, (fb + k) & mask, 0]
        vb += ring_f[b, (fb + k) & mask, 1]
        pc += ring_f[c, (fc + k) & mask, 0]
        vc += ring_f[c, (fc + k) & mask, 1]
        pd += ring_f[d, (fd + k) & mask, 0]
        vd += ring_f[d, (fd + k) & mask, 1]
    vf[j, 2] = pa / va
    vf[j + 1, 2] = pb / vb
    vf[j + 2, 2] = pc / vc
    vf[j + 3, 2] = pd / vd


@numba.njit(cache=True, error_model="numpy")
def collect(touched, n_touched, H, N, sma_n, ring_f, si, sf, sma, ema, vi, vf):
    """Values to publish for the symbols of a batch, in ascending local index.

    Row j of ``vi``: symbol, last ts_event, last ts_recv, session start, trades so far.
    Row j of ``vf``: session VWAP, session volume, rolling VWAP, then the SMA values (NaN while
    the window is not full), then the EMA values. The rolling VWAP is recomputed over the last
    `N` trades (fewer if the symbol has fewer): sequential sums of price*size and of size,
    oldest trade first. Returns the number of rows.
    """
    syms = np.sort(touched[:n_touched])
    mask = H - 1
    nsma = sma_n.shape[0]
    first = np.empty(n_touched, dtype=np.int64)
    count = np.empty(n_touched, dtype=np.int64)
    for j in range(n_touched):
        s = syms[j]
        n = si[s, S_NTR]
        vi[j, 0] = s
        vi[j, 1] = si[s, S_LAST_EV]
        vi[j, 2] = si[s, S_LAST_RECV]
        vi[j, 3] = si[s, S_SESS_START]
        vi[j, 4] = n
        vf[j, 0] = sf[s, F_SESS_PV] / sf[s, F_SESS_VOL]
        vf[j, 1] = sf[s, F_SESS_VOL]
        vf[j, 2] = 0.0
        first[j] = max(0, n - N)
        count[j] = n - first[j]
        for k in range(nsma):
            vf[j, 3 + k] = np.float64(sma[s, k]) / (sma_n[k] * 1e9) if n >= sma_n[k] else np.nan
        for k in range(ema.shape[1]):
            vf[j, 3 + nsma + k] = ema[s, k]
    if N > 0:
        j = 0
        while j < n_touched:
            if j + 4 <= n_touched and count[j] == count[j + 1] == count[j + 2] == count[j + 3]:
                _window_sums4(ring_f, syms, first, count[j], mask, j, vf)
                j += 4
            else:
                pv = 0.0
                vol = 0.0
                for k in range(first[j], first[j] + count[j]):
                    pv += ring_f[syms[j], k & mask, 0]
                    vol += ring_f[syms[j], k & mask, 1]
                vf[j, 2] = pv / vol
                j += 1
    return n_touched


@numba.njit(cache=True, error_model="numpy")
def update_and_collect(ri, rf, sym, trades, n_trades, stamp, ip, fp, sma_n, ema_alpha, ema_om, bounds,
                       ring_p, ring_f, si, sf, z2, sma, ema, touched, ai, af, counts, N, publish, vi, vf):
    """`update_trades`, then (when `publish`) `collect` into `vi`/`vf`: one call per batch."""
    n_touch, n_an = update_trades(ri, rf, sym, trades, n_trades, stamp, ip, fp, sma_n, ema_alpha, ema_om, bounds,
                                  ring_p, ring_f, si, sf, z2, sma, ema, touched, ai, af, counts)
    if publish and n_touch:
        collect(touched, n_touch, ip[P_H], N, sma_n, ring_f, si, sf, sma, ema, vi, vf)
    return n_touch, n_an
