"""The ``seq`` and ``src`` of many payloads, found in one compiled pass over their MessagePack.

The recovery service needs, per message the hub forwards, only its first and last ``seq`` and its
``src`` (`streamctl.bus.wire`: every payload carries them; a batched kind's payload is an array
of maps). Decoding them with msgspec parsed every field of every element: a 28-trade array cost
about 10 us, the largest part of the service's time at 100 k trades/s. Here the MessagePack is
walked, not decoded: one call per take, the other fields skipped by their headers.

A payload is refused exactly where `msgspec.msgpack.Decoder` of ``list[{seq: int, src: str}]``
(batched kinds, at least one element) or of the map itself refuses it: not MessagePack, trailing
bytes, a key that is not a string, ``seq`` not an integer, ``src`` not a string. One difference: a
``seq`` past the int64 range is refused here (the output journal could not store it either). The
caller checks that ``src`` is UTF-8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

__all__ = ["Found", "find", "warm_up"]

_BAD, _INT, _STR, _MAP, _ARRAY, _OTHER, _WIDE = range(7)
"""Kinds of object; `_WIDE`: an unsigned integer past int64."""
_S, _E, _Q, _R, _C = 0x73, 0x65, 0x71, 0x72, 0x63
"""The letters of ``seq`` and ``src``."""


@numba.njit(cache=True)
def _unsigned(data, at, size):
    value = np.uint64(0)
    for k in range(size):
        value = (value << np.uint64(8)) | np.uint64(data[at + k])
    return value


@numba.njit(cache=True)
def _head(data, at, end):
    """The object at `at`: (kind, value, next). `value` is an integer's value (0 for `_WIDE`), a
    string's length (its bytes start at `next`) or a container's element count; `next` is where the following
    object starts (for a string: its bytes; for other scalars: past them)."""
    if at >= end:
        return _BAD, 0, at
    b = data[at]
    if b <= 0x7F:
        return _INT, np.int64(b), at + 1
    if b <= 0x8F:
        return _MAP, np.int64(b & 0x0F), at + 1
    if b <= 0x9F:
        return _ARRAY, np.int64(b & 0x0F), at + 1
    if b <= 0xBF:
        return _STR, np.int64(b & 0x1F), at + 1
    if b >= 0xE0:
        return _INT, np.int64(b) - 256, at + 1
    if b == 0xC0 or b == 0xC2 or b == 0xC3:  # nil, false, true
        return _OTHER, 0, at + 1
    if b == 0xCA or b == 0xCB:  # float 32, 64
        return _OTHER, 0, at + (5 if b == 0xCA else 9)
    if 0xD4 <= b <= 0xD8:  # fixext 1-16: a type byte, then the data
        return _OTHER, 0, at + 2 + (1 << (b - 0xD4))
    size = 0
    kind = _BAD
    extra = 0
    if 0xC4 <= b <= 0xC6:  # bin 8/16/32
        size, kind = 1 << (b - 0xC4), _OTHER
    elif 0xC7 <= b <= 0xC9:  # ext 8/16/32: the length, a type byte, the data
        size, kind, extra = 1 << (b - 0xC7), _OTHER, 1
    elif 0xCC <= b <= 0xCF:  # uint 8-64
        size, kind = 1 << (b - 0xCC), _INT
    elif 0xD0 <= b <= 0xD3:  # int 8-64
        size, kind = 1 << (b - 0xD0), _INT
    elif 0xD9 <= b <= 0xDB:  # str 8/16/32
        size, kind = 1 << (b - 0xD9), _STR
    elif b == 0xDC or b == 0xDD:  # array 16/32
        size, kind = 2 if b == 0xDC else 4, _ARRAY
    elif b == 0xDE or b == 0xDF:  # map 16/32
        size, kind = 2 if b == 0xDE else 4, _MAP
    if kind == _BAD or at + 1 + size > end:  # 0xC1 (never used) or a cut header
        return _BAD, 0, at
    raw = _unsigned(data, at + 1, size)
    after = at + 1 + size
    if kind == _OTHER:
        return _OTHER, 0, after + extra + np.int64(raw)
    if kind == _INT and b >= 0xD0:  # signed: sign-extend from `size` bytes
        shift = np.uint64(64 - 8 * size)
        return _INT, np.int64(raw << shift) >> np.int64(shift), after
    if raw > np.uint64(0x7FFFFFFFFFFFFFFF):
        return _WIDE, 0, after
    return kind, np.int64(raw), after


@numba.njit(cache=True)
def _skip(data, at, end):
    """Past the whole object at `at` (containers included); -1 if it is not whole MessagePack."""
    remaining = 1
    while remaining:
        kind, value, after = _head(data, at, end)
        if kind == _BAD:
            return -1
        if kind == _STR:
            after += value
        elif kind == _ARRAY:
            remaining += value
        elif kind == _MAP:
            remaining += 2 * value
        if after > end:
            return -1
        remaining -= 1
        at = after
    return at


@numba.njit(cache=True)
def _is(data, at, c0, c1, c2):
    return data[at] == c0 and data[at + 1] == c1 and data[at + 2] == c2


@numba.njit(cache=True)
def _seq_map(data, at, end, out):
    """Read the map at `at` into ``out = [seq, src start, src end]`` (0 and an empty ``src`` when
    absent; the last of repeated keys wins); past the map, or -1 where msgspec would refuse it."""
    kind, count, at = _head(data, at, end)
    if kind != _MAP:
        return -1
    out[0] = out[1] = out[2] = 0
    for _ in range(count):
        kind, length, key = _head(data, at, end)
        if kind != _STR or key + length > end:
            return -1
        at = key + length
        if length == 3 and _is(data, key, _S, _E, _Q):
            kind, value, at = _head(data, at, end)
            if kind != _INT or at > end:
                return -1
            out[0] = value
        elif length == 3 and _is(data, key, _S, _R, _C):
            kind, length, text = _head(data, at, end)
            if kind != _STR or text + length > end:
                return -1
            out[1], out[2] = text, text + length
            at = text + length
        else:
            at = _skip(data, at, end)
            if at < 0:
                return -1
    return at


@numba.njit(cache=True)
def _scan(data, ends, batched, first, last, src_start, src_end, ok):
    """Payload ``i`` is ``data[ends[i-1]:ends[i]]`` (from 0 for the first): an array of maps when
    ``batched[i]``, else a map. Fill ``first[i]``, ``last[i]`` (the first and last element's
    ``seq``; the map's own for a map), ``data[src_start[i]:src_end[i]]`` (the first element's
    ``src``), and ``ok[i]`` 1, or ``ok[i]`` 0 where msgspec would refuse the payload."""
    out = np.zeros(3, np.int64)
    start = 0
    for i in range(len(ends)):
        end = ends[i]
        ok[i] = 0
        if batched[i]:
            kind, count, at = _head(data, start, end)
            if kind == _ARRAY and count > 0:
                at = _seq_map(data, at, end, out)
                first[i], src_start[i], src_end[i] = out[0], out[1], out[2]
                for _ in range(count - 1):
                    if at < 0:
                        break
                    at = _seq_map(data, at, end, out)
                last[i] = out[0]
                ok[i] = at == end
        else:
            at = _seq_map(data, start, end, out)
            first[i] = last[i] = out[0]
            src_start[i], src_end[i] = out[1], out[2]
            ok[i] = at == end
        start = end


class Found(NamedTuple):
    """What `find` found: per payload, 1 when it is well formed (else the rest is meaningless),
    its first and last seq, and where its ``src`` is in `joined` (the payloads, end to end)."""

    joined: bytes
    ok: list[int]
    first: list[int]
    last: list[int]
    src_start: list[int]
    src_end: list[int]


def find(payloads: Sequence[bytes], batched: Sequence[bool]) -> Found:
    """The seqs and srcs of `payloads` (each an array of maps where `batched`, else a map) in one
    compiled call."""
    count = len(payloads)
    joined = b"".join(payloads)
    ends = np.cumsum(np.fromiter(map(len, payloads), np.int64, count))
    first, last, src_start, src_end, ok = (np.empty(count, np.int64) for _ in range(5))
    _scan(np.frombuffer(joined, np.uint8), ends, np.fromiter(batched, np.uint8, count), first, last, src_start,
          src_end, ok)
    return Found(joined, ok.tolist(), first.tolist(), last.tolist(), src_start.tolist(), src_end.tolist())


def warm_up() -> None:
    """Compile (or load from numba's cache) the scan, before the first take needs it."""
    find([b"\x81\xa3seq\x01"], [False])
