"""The compiled hot path: one pass over received bytes that frames them and decodes tick-by-tick.

Tick-by-tick messages (id 99) are nearly all of a busy feed's traffic; decoding them field by
field in Python costs about as much as the official client does. `scan` walks the frames of a
byte buffer once: a well-formed tick-by-tick Last/AllLast/BidAsk message is decoded into columns
(numbers parsed as Python's ``float()`` and ``int()`` would: a decimal mantissa below 2**53 over
an exact power of ten, so the result is the correctly rounded one); every other frame, and a
tick-by-tick message that does not parse, is returned by position for the Python path
(`parsing.MarketData`, which also says why a bad one is bad).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["scan", "columns", "warm_up", "TICK", "OTHER", "POW10", "MAX_SECONDS"]

TICK = 1
"""Frame kind: a decoded tick-by-tick message (columns filled)."""
OTHER = 2
"""Frame kind: anything else, for the Python path."""
_NUL = 0
POW10 = np.array([10.0**i for i in range(23)])
"""Exact powers of ten (10**0 .. 10**22 are exact doubles)."""
MAX_SECONDS = (2**63 - 1) // 1_000_000_000
"""Largest tick time (s) whose nanoseconds int64 holds; a later one would wrap to a plausible time."""


@numba.njit(cache=True, nogil=True)
def _number(buf, pos, end, pow10):
    """(value, position after the field's NUL, ok) of a decimal field ``[-]digits[.digits]``."""
    neg = False
    if pos < end and buf[pos] == 45:  # '-'
        neg = True
        pos += 1
    mant = 0
    digits = 0
    scale = 0
    dot = False
    while pos < end and buf[pos] != _NUL:
        c = buf[pos]
        if c == 46 and not dot:  # '.'
            dot = True
        elif 48 <= c <= 57:
            if digits >= 15:
                return 0.0, pos, False
            mant = mant * 10 + (c - 48)
            digits += 1
            if dot:
                scale += 1
        else:
            return 0.0, pos, False
        pos += 1
    if pos >= end or digits == 0 or scale > 22:
        return 0.0, pos, False
    value = mant / pow10[scale]
    return (-value if neg else value), pos + 1, True


@numba.njit(cache=True, nogil=True)
def _integer(buf, pos, end):
    """(value, position after the field's NUL, ok) of an integer field ``[-]digits``."""
    neg = False
    if pos < end and buf[pos] == 45:
        neg = True
        pos += 1
    value = 0
    digits = 0
    while pos < end and buf[pos] != _NUL:
        c = buf[pos]
        if not 48 <= c <= 57 or digits >= 18:
            return 0, pos, False
        value = value * 10 + (c - 48)
        digits += 1
        pos += 1
    if pos >= end or digits == 0:
        return 0, pos, False
    return (-value if neg else value), pos + 1, True


@numba.njit(cache=True, nogil=True)
def _skip(buf, pos, end):
    """Position after the next NUL (end + 1 if there is none)."""
    while pos < end and buf[pos] != _NUL:
        pos += 1
    return pos + 1


@numba.njit(cache=True, nogil=True)
def scan(buf, limit, kind, start, length, req, tick_type, ts, p1, p2, s1, s2, pow10):
    """Frame `buf` and decode its tick-by-tick messages.

    Writes, per frame i: ``kind[i]`` (`TICK` or `OTHER`), ``start[i]``/``length[i]`` (the
    payload), and for ticks ``req``, ``tick_type``, ``ts`` (seconds), ``p1``/``p2`` (price or
    bid/ask), ``s1``/``s2`` (size or bid/ask size). Returns (frames, bytes consumed, oversized):
    a frame announcing more than `limit` bytes stops the scan with ``oversized`` set.
    """
    n = 0
    pos = 0
    size = len(buf)
    cap = len(kind)
    while size - pos >= 4 and n < cap:
        m = (np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8) | buf[pos + 3]
        if m > limit:
            return n, pos, True
        if size - pos - 4 < m:
            break
        a = pos + 4
        end = a + m
        start[n] = a
        length[n] = m
        kind[n] = OTHER
        if m > 3 and buf[a] == 57 and buf[a + 1] == 57 and buf[a + 2] == _NUL:  # "99\0"
            q = a + 3
            r, q, ok = _integer(buf, q, end)
            t, q, ok2 = _integer(buf, q, end)
            sec, q, ok3 = _integer(buf, q, end)
            if ok and ok2 and ok3 and -MAX_SECONDS <= sec <= MAX_SECONDS:
                if t == 1 or t == 2:
                    x, q, ok = _number(buf, q, end, pow10)
                    y, q, ok2 = _number(buf, q, end, pow10)
                    _, q, ok3 = _integer(buf, q, end)  # attribute mask
                    q = _skip(buf, q, end)  # exchange
                    q = _skip(buf, q, end)  # special conditions
                    if ok and ok2 and ok3 and q == end:
                        kind[n] = TICK
                        p1[n], s1[n], p2[n], s2[n] = x, y, 0.0, 0.0
                elif t == 3:
                    x, q, ok = _number(buf, q, end, pow10)
                    y, q, ok2 = _number(buf, q, end, pow10)
                    u, q, ok3 = _number(buf, q, end, pow10)
                    v, q, ok4 = _number(buf, q, end, pow10)
                    _, q, ok5 = _integer(buf, q, end)
                    if ok and ok2 and ok3 and ok4 and ok5 and q == end:
                        kind[n] = TICK
                        p1[n], p2[n], s1[n], s2[n] = x, y, u, v
                if kind[n] == TICK:
                    req[n] = r
                    tick_type[n] = t
                    ts[n] = sec
        n += 1
        pos = end
    return n, pos, False


def warm_up() -> int:
    """Compile (or load from cache) `scan` on a small stream of every frame shape."""
    from streamctl.ingest.vendors.ibkr import protocol as api

    data = (api.encode(99, 1, 2, 1700000000, "5528.75", "2", 0, "CME", "")
            + api.encode(99, 2, 3, 1700000000, "1.5", "-2", "3", "4", 0)
            + api.encode(99, 1, 2, "bad", "1", "1", 0, "", "") + api.encode(49, 1, 1700000000))
    k, st, ln, rq, tt, ts, p1, p2, s1, s2 = columns(8)
    frames, _, _ = scan(np.frombuffer(data, np.uint8), api.MAX_FRAME, k, st, ln, rq, tt, ts, p1, p2, s1, s2, POW10)
    return frames


def columns(n: int) -> tuple[np.ndarray, ...]:
    """Output columns for `n` frames, in `scan`'s order."""
    return (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
