"""Exact unsigned 128-bit arithmetic for the rolling z-score, in numba.

The z-score's rolling sums are kept in integers (prices are int64 fixed point) so they never
drift and never depend on how ticks were split into batches: the sum of prices fits in an
int64, the sum of squared prices needs 128 bits. A value is a pair ``(hi, lo)`` of uint64.
Only the operations the z-score needs exist, and every one assumes its result fits.
`to_float` rounds correctly (to nearest, ties to even), exactly like Python's ``float(int)``,
so a reference written with Python integers reproduces our floats bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["mul64", "add128", "sub128", "mul128_64", "to_float", "U64"]

U64 = np.uint64
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
