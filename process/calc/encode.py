"""The calculators' payloads written as MessagePack by compiled code, one call per batch.

`Bar`, `Vwap` and `Indicator` maps are most of what a worker publishes (one `Vwap` and one
`Indicator` per symbol per batch): building a msgspec Struct for each cost more than the
kernels computing them. These writers append them, numbered, to a `MessageWriter` straight
from the kernels' output rows. The bytes are exactly ``msgspec.msgpack.encode`` of the Struct
with ``seq`` and ``src`` set (``tests/test_calc_encode.py`` proves it for random values):

- keys and map headers come from the Structs' own fields (`wire.Bar`...), checked at import
  against the order the writers follow;
- integers take msgspec's form, the shortest (fixint, then uint 8/16/32/64 for >= 0,
  negative fixint, then int 8/16/32/64);
- floats are float64 (``0xcb``) with their bits as they are (NaN payloads, -0.0);
- strings (``src``, symbols, intervals) are encoded once by msgspec and copied.

Every numba function the writers call is defined in this module (numba's on-disk cache only
notices changes to the kernel's own file); the output-row columns come from `bar_kernels`.
"""

from __future__ import annotations

import msgspec
import numba
import numpy as np

from streamctl.bus import wire
from streamctl.bus.messages import Messages, MessageWriter, Topics
from streamctl.process.calc.bar_kernels import (
    O_CLOSE,
    O_END,
    O_EV,
    O_HIGH,
    O_LOW,
    O_NEMPTY,
    O_OPEN,
    O_RECV,
    O_SPEC,
    O_START,
    O_SYM,
    O_TRADES,
    OF_VOL,
    OF_VWAP,
)

__all__ = ["Strings", "Producer", "write_bars", "pack_bars", "pack_series", "series_heads", "message_bounds"]

BAR_FIELDS = ("seq", "src", "symbol", "interval", "ts_start", "ts_end", "open", "high", "low", "close", "volume",
              "trades", "vwap", "ts_event", "ts_recv", "revision")
VWAP_FIELDS = ("seq", "src", "symbol", "ts_event", "ts_recv", "session_start", "session_vwap", "session_volume",
               "rolling_vwap", "window")
INDICATOR_FIELDS = ("seq", "src", "symbol", "name", "window", "value", "ts_event", "ts_recv")
_VALUE_BYTES = 9
"""The most bytes an int or float value takes (type byte + 8)."""


class Strings:
    """Byte strings back to back: item ``i`` is ``data[ends[i]:ends[i + 1]]``. ``data`` and
    ``ends`` are views of buffers that double when full, so appending n items costs O(n) in
    all; each `append` may replace them."""

    def __init__(self, items: list[bytes] | None = None):
        self._bytes = np.zeros(64, dtype=np.uint8)
        self._ends = np.zeros(16, dtype=np.int64)
        self.data = self._bytes[:0]
        self.ends = self._ends[:1]
        self.longest = 0
        for item in items or []:
            self.append(item)

    def __len__(self) -> int:
        return len(self.ends) - 1

    def append(self, item: bytes) -> None:
        used, n = len(self.data), len(self.ends)
        if used + len(item) > len(self._bytes):
            grown = np.zeros(max(used + len(item), 2 * len(self._bytes)), dtype=np.uint8)
            grown[:used] = self.data
            self._bytes = grown
        if n == len(self._ends):
            ends = np.zeros(2 * n, dtype=np.int64)
            ends[:n] = self.ends
            self._ends = ends
        self._bytes[used:used + len(item)] = np.frombuffer(item, dtype=np.uint8)
        self._ends[n] = used + len(item)
        self.data = self._bytes[:used + len(item)]
        self.ends = self._ends[:n + 1]
        self.longest = max(self.longest, len(item))

    def append_str(self, text: str) -> None:
        """Append `text` as a MessagePack str."""
        self.append(msgspec.msgpack.encode(text))


class Producer:
    """What every payload of one producer shares: its ``src`` and symbols as MessagePack
    strings, and its topic table (which numbers the messages)."""

    def __init__(self, src: str):
        self.name = src
        self.src = np.frombuffer(msgspec.msgpack.encode(src), dtype=np.uint8)
        self.symbols = Strings()
        """Item ``s``: the symbol of local index ``s``."""
        self.topics = Topics()
        self._room = (4096, 64)

    def add_symbol(self, symbol: str) -> None:
        self.symbols.append_str(symbol)

    def writer(self) -> MessageWriter:
        """A writer for one batch, as large as the largest batch so far (so it seldom grows)."""
        return MessageWriter(self.topics, self.name, nbytes=self._room[0], messages=self._room[1])

    def finish(self, writer: MessageWriter) -> Messages:
        """`writer`'s batch; its size is remembered for the next writers."""
        nbytes, messages = self._room
        if writer.size > nbytes or writer.count > messages:
            self._room = (max(nbytes, writer.size), max(messages, writer.count))
        return writer.finish()


def _map_header(n: int) -> bytes:
    return bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")


def _keys(struct: type, fields: tuple[str, ...]) -> Strings:
    """Per field of `struct`, the bytes before its value: its key (the map header before the first)."""
    names = tuple(f.encode_name for f in msgspec.structs.fields(struct))
    if names != fields:
        raise AssertionError(f"{struct.__name__}'s fields changed; the compiled writers follow {fields}")
    keys = [msgspec.msgpack.encode(f) for f in fields]
    keys[0] = _map_header(len(fields)) + keys[0]
    return Strings(keys)


_BAR_KEYS = _keys(wire.Bar, BAR_FIELDS)
_VWAP_KEYS = _keys(wire.Vwap, VWAP_FIELDS)
_INDICATOR_KEYS = _keys(wire.Indicator, INDICATOR_FIELDS)
# Constants of the compiled code (numba freezes global arrays): the field tuples above, in
# this file, fix them, so the on-disk cache cannot hold stale ones.
_BAR_KEY_DATA, _BAR_KEY_ENDS = _BAR_KEYS.data, _BAR_KEYS.ends
_VWAP_KEY_DATA, _VWAP_KEY_ENDS = _VWAP_KEYS.data, _VWAP_KEYS.ends
_IND_KEY_DATA, _IND_KEY_ENDS = _INDICATOR_KEYS.data, _INDICATOR_KEYS.ends


def _bound(keys: Strings, strings: int, values: int) -> int:
    """Most bytes of one map: its keys, `strings` bytes of strings and `values` ints or floats."""
    return int(keys.ends[-1]) + strings + values * _VALUE_BYTES


# --------------------------------------------------------------------------- compiled writers


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(data, pos, strings, ends, i):
    # Unsigned indices: numba skips the negative-index wrap-around, ~5x faster here.
    a = ends[i]
    n = ends[i + 1] - a
    for b in range(n):
        data[np.uint64(pos + b)] = strings[np.uint64(a + b)]
    return pos + n


@numba.njit(cache=True, nogil=True, inline="always")
def _big_endian(data, pos, value, nbytes):
    for b in range(nbytes):
        data[np.uint64(pos + b)] = (value >> (8 * (nbytes - 1 - b))) & 0xFF
    return pos + nbytes


@numba.njit(cache=True, nogil=True, inline="always")
def _int(data, pos, value):
    """`value` (int64) in msgspec's form: the shortest MessagePack integer."""
    if value >= 0:
        if value < 0x80:
            data[pos] = value
            return pos + 1
        if value < 0x100:
            data[pos] = 0xCC
            return _big_endian(data, pos + 1, value, 1)
        if value < 0x10000:
            data[pos] = 0xCD
            return _big_endian(data, pos + 1, value, 2)
        if value < 0x100000000:
            data[pos] = 0xCE
            return _big_endian(data, pos + 1, value, 4)
        data[pos] = 0xCF
        return _big_endian(data, pos + 1, value, 8)
    if value >= -32:
        data[pos] = value & 0xFF
        return pos + 1
    if value >= -0x80:
        data[pos] = 0xD0
        return _big_endian(data, pos + 1, value, 1)
    if value >= -0x8000:
        data[pos] = 0xD1
        return _big_endian(data, pos + 1, value, 2)
    if value >= -0x80000000:
        data[pos] = 0xD2
        return _big_endian(data, pos + 1, value, 4)
    data[pos] = 0xD3
    return _big_endian(data, pos + 1, value, 8)


@numba.njit(cache=True, nogil=True, inline="always")
def _float(data, pos, value, scratch_f, scratch_i):
    """`value` as float64 (``0xcb``), its bits unchanged (through a float64/int64 view pair)."""
    scratch_f[0] = value
    data[pos] = 0xCB
    return _big_endian(data, pos + 1, scratch_i[0], 8)


@numba.njit(cache=True, nogil=True, inline="always")
def _key_int(data, pos, keys, key_ends, field, value):
    """Key `field` of the map, then its int `value`."""
    return _int(data, _copy(data, pos, keys, key_ends, field), value)


@numba.njit(cache=True, nogil=True, inline="always")
def _key_float(data, pos, keys, key_ends, field, value, scratch_f, scratch_i):
    """Key `field` of the map, then its float `value`."""
    return _float(data, _copy(data, pos, keys, key_ends, field), value, scratch_f, scratch_i)


@numba.njit(cache=True, nogil=True, inline="always")
def _begin(data, pos, keys, key_ends, seqs, tid, src):
    """Map header, ``seq`` (the topic's next) and ``src``; returns (pos, seq)."""
    seq = seqs[tid] + 1
    seqs[tid] = seq
    pos = _copy(data, pos, keys, key_ends, 0)
    pos = _int(data, pos, seq)
    pos = _copy(data, pos, keys, key_ends, 1)
    for b in range(src.shape[0]):
        data[np.uint64(pos + b)] = src[np.uint64(b)]
    return pos + src.shape[0], seq


@numba.njit(cache=True, nogil=True, inline="always")
def _opening(data, pos, keys, key_ends, seqs, tid, src, sym_data, sym_ends, s, strings, string_ends, item):
    """Fields 0-3 of a Bar or an Indicator: ``seq``, ``src``, ``symbol``, then a string (the
    interval, the indicator's name): item `item` of `strings`. Returns (pos, seq)."""
    pos, seq = _begin(data, pos, keys, key_ends, seqs, tid, src)
    pos = _copy(data, pos, keys, key_ends, 2)
    pos = _copy(data, pos, sym_data, sym_ends, s)
    pos = _copy(data, pos, keys, key_ends, 3)
    return _copy(data, pos, strings, string_ends, item), seq


@numba.njit(cache=True, nogil=True, inline="always")
def _end(index, count, pos, tid, seq):
    index[count, 0] = pos
    index[count, 1] = tid
    index[count, 2] = seq
    return count + 1


@numba.njit(cache=True, nogil=True)
def _bar(data, pos, keys, key_ends, seqs, tid, src, sym_data, sym_ends, s, label_data, label_ends, k, start, end,
         open_, high, low, close, volume, trades, vwap, ev, recv, sf, su):
    pos, seq = _opening(data, pos, keys, key_ends, seqs, tid, src, sym_data, sym_ends, s, label_data, label_ends, k)
    pos = _key_int(data, pos, keys, key_ends, 4, start)
    pos = _key_int(data, pos, keys, key_ends, 5, end)
    for field, value in ((6, open_), (7, high), (8, low), (9, close), (10, volume)):
        pos = _key_float(data, pos, keys, key_ends, field, value, sf, su)
    pos = _key_int(data, pos, keys, key_ends, 11, trades)
    pos = _key_float(data, pos, keys, key_ends, 12, vwap, sf, su)
    pos = _key_int(data, pos, keys, key_ends, 13, ev)
    pos = _key_int(data, pos, keys, key_ends, 14, recv)
    pos = _copy(data, pos, keys, key_ends, 15)
    data[pos] = 0  # revision: bars from the kernels are first publications
    return pos + 1, seq


@numba.njit(cache=True, nogil=True)
def pack_bars(data, size, index, count, seqs, out_int, out_float, rows, bar_tid, widths, src, sym_data, sym_ends,
              label_data, label_ends):
    """Append `Bar` maps for output rows ``0..rows`` of `bar_kernels` (a run of empty bars
    expanded to one map each: flat at the previous close, volume 0, no trades)."""
    keys, key_ends = _BAR_KEY_DATA, _BAR_KEY_ENDS
    sf = np.zeros(1, dtype=np.float64)
    su = sf.view(np.int64)
    pos = size
    for r in range(rows):
        s = out_int[r, O_SYM]
        k = out_int[r, O_SPEC]
        tid = bar_tid[s, k]
        start = out_int[r, O_START]
        ev = out_int[r, O_EV]
        recv = out_int[r, O_RECV]
        empty = out_int[r, O_NEMPTY]
        if empty == 0:
            pos, seq = _bar(data, pos, keys, key_ends, seqs, tid, src, sym_data, sym_ends, s, label_data,
                            label_ends, k, start, out_int[r, O_END], out_int[r, O_OPEN] / 1e9,
                            out_int[r, O_HIGH] / 1e9, out_int[r, O_LOW] / 1e9, out_int[r, O_CLOSE] / 1e9,
                            out_float[r, OF_VOL], out_int[r, O_TRADES], out_float[r, OF_VWAP], ev, recv, sf, su)
            count = _end(index, count, pos, tid, seq)
            continue
        width = widths[k]
        price = out_int[r, O_CLOSE] / 1e9
        for e in range(empty):
            begin = start + e * width
            pos, seq = _bar(data, pos, keys, key_ends, seqs, tid, src, sym_data, sym_ends, s, label_data,
                            label_ends, k, begin, begin + width, price, price, price, price, 0.0, 0, price, ev,
                            recv, sf, su)
            count = _end(index, count, pos, tid, seq)
    return pos, count


@numba.njit(cache=True, nogil=True)
def pack_series(data, size, index, count, seqs, values_int, values_float, n, tid_of, vwap, spans, nsma, heads,
                head_ends):
    """Append the `Vwap` maps (when `vwap`), then per SMA window the `Indicator` of each symbol
    whose window is full, then per EMA span every symbol's, for rows ``0..n`` of
    `trade_kernels.collect`'s output. ``tid_of[s]``: symbol ``s``'s topic ids, its Vwap's (when
    `vwap`), then per entry of `spans` (SMA windows, then `nsma` on, EMA spans) its Indicator's.
    `heads`/`head_ends`: `series_heads` of every symbol, back to back (the bytes that are the
    same in every batch, so each is one copy)."""
    vwap_keys, vwap_key_ends = _VWAP_KEY_DATA, _VWAP_KEY_ENDS
    ind_keys, ind_key_ends = _IND_KEY_DATA, _IND_KEY_ENDS
    sf = np.zeros(1, dtype=np.float64)
    su = sf.view(np.int64)
    pos = size
    first = 1 if vwap else 0
    per_symbol = 2 + spans.shape[0]
    if vwap:
        for j in range(n):
            s = values_int[j, 0]
            tid = tid_of[s, 0]
            seq = seqs[tid] + 1
            seqs[tid] = seq
            pos = _int(data, _copy(data, pos, vwap_keys, vwap_key_ends, 0), seq)
            pos = _copy(data, pos, heads, head_ends, s * per_symbol)  # src, symbol, the ts_event key
            pos = _int(data, pos, values_int[j, 1])
            for c in range(2):  # ts_recv, session_start
                pos = _key_int(data, pos, vwap_keys, vwap_key_ends, 4 + c, values_int[j, 2 + c])
            for c in range(3):  # session_vwap, session_volume, rolling_vwap
                pos = _key_float(data, pos, vwap_keys, vwap_key_ends, 6 + c, values_float[j, c], sf, su)
            pos = _copy(data, pos, heads, head_ends, s * per_symbol + 1)  # window
            count = _end(index, count, pos, tid, seq)
    for k in range(spans.shape[0]):
        for j in range(n):
            s = values_int[j, 0]
            if k < nsma and values_int[j, 4] < spans[k]:  # the SMA window is not full yet
                continue
            tid = tid_of[s, first + k]
            seq = seqs[tid] + 1
            seqs[tid] = seq
            pos = _int(data, _copy(data, pos, ind_keys, ind_key_ends, 0), seq)
            pos = _copy(data, pos, heads, head_ends, s * per_symbol + 2 + k)  # src ... the value key
            pos = _float(data, pos, values_float[j, 3 + k], sf, su)
            pos = _key_int(data, pos, ind_keys, ind_key_ends, 6, values_int[j, 1])
            pos = _key_int(data, pos, ind_keys, ind_key_ends, 7, values_int[j, 2])
            count = _end(index, count, pos, tid, seq)
    return pos, count


# --------------------------------------------------------------------------- Python side


def write_bars(writer: MessageWriter, producer: Producer, labels: Strings, out_int: np.ndarray,
               out_float: np.ndarray, rows: int, bar_tid: np.ndarray, widths: np.ndarray, empty: int) -> None:
    """Append the `Bar` maps of `bar_kernels` output rows ``0..rows`` to `writer`; `empty`: the
    empty bars those rows hold in all (their runs are expanded)."""
    if rows == 0:
        return
    src, symbols = producer.src, producer.symbols
    messages = rows + empty
    writer.reserve(messages * message_bounds(producer, labels)[0], messages)
    writer.size, writer.count = pack_bars(
        writer.data, writer.size, writer.index, writer.count, writer.topics.seqs, out_int, out_float, rows, bar_tid,
        widths, src, symbols.data, symbols.ends, labels.data, labels.ends)


def message_bounds(producer: Producer, labels: Strings) -> tuple[int, int, int]:
    """Most bytes of one `Bar` (intervals `labels`), one `Vwap` and one `Indicator` map of `producer`."""
    strings = len(producer.src) + producer.symbols.longest
    return (_bound(_BAR_KEYS, strings + labels.longest, 12), _bound(_VWAP_KEYS, strings, 7),
            _bound(_INDICATOR_KEYS, strings + 4, 5))


def series_heads(src: str, symbol: str, window: int, sma: list[int], ema: list[int]) -> list[bytes]:
    """The constant runs of one symbol's `Vwap` and `Indicator` maps, for `pack_series`: from the
    Vwap's ``src`` key to its ``ts_event`` key; its ``window`` field; then per SMA window and EMA
    span, from the Indicator's ``src`` key to its ``value`` key."""
    def field(key: str, value: object) -> bytes:
        return msgspec.msgpack.encode(key) + msgspec.msgpack.encode(value)
    common = field("src", src) + field("symbol", symbol)
    heads = [common + msgspec.msgpack.encode("ts_event"), field("window", window)]
    for name, spans in (("sma", sma), ("ema", ema)):
        heads += [common + field("name", name) + field("window", span) + msgspec.msgpack.encode("value")
                  for span in spans]
    return heads
