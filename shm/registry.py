"""Per-feed symbol registry: stable dense instrument ids shared by the feed and the workers.

Records carry a u32 `instrument_id`, not a symbol string; this table maps ids back to
symbols for every process of the plant. One segment per feed (``stc_<plant>_sym_<feed>``),
one writer (the feed process), many readers (workers, status). The writer fills an entry
first and publishes the new count last with one aligned 8-byte store, so a reader never
sees a half-written entry. A restarted writer attaches and reloads the entries, so ids
stay the same across restarts.
"""

from __future__ import annotations

import numpy as np

from .segments import HEADER_SIZE, Segment, SegmentError, SegmentKind, SegmentView, attach_view

__all__ = ["SymbolRegistry", "RegistryError", "SYMBOL_MAX_BYTES", "registry_bytes", "symbol_problem", "NO_INSTRUMENT"]

SYMBOL_MAX_BYTES = 47
"""Longest symbol in UTF-8 bytes (an entry is 48 bytes: the symbol, NUL-padded)."""

_ENTRY = 48
_TABLE_OFFSET = HEADER_SIZE + 64  # common header + registry line (capacity, entry size, count)
_W_CAPACITY = 8
_W_ENTRY_SIZE = 9
_W_COUNT = 10  # published last, by the writer only


class RegistryError(SegmentError):
    """A symbol could not be registered (too long, bad characters, table full)."""


def registry_bytes(capacity: int) -> int:
    """Size of the segment for a registry of `capacity` symbols."""
    return _TABLE_OFFSET + capacity * _ENTRY


class SymbolRegistry(SegmentView):
    """Symbol <-> instrument id table in shared memory (ids dense from 1)."""

    __slots__ = ("_seg", "_h", "_table", "_capacity", "_ids", "_symbols", "name")

    def __init__(self, seg: Segment) -> None:
        assert seg.buf is not None
        h = seg.buf[:_TABLE_OFFSET].cast("Q")
        capacity, entry = h[_W_CAPACITY], h[_W_ENTRY_SIZE]
        if entry != _ENTRY or capacity < 1 or _TABLE_OFFSET + capacity * _ENTRY > seg.size:
            h.release()
            raise RegistryError(f"registry `{seg.name}` has a corrupt header (capacity {capacity}, entry {entry})")
        self._seg = seg
        self._h = h
        self._table = np.frombuffer(seg.buf, dtype=f"S{_ENTRY}", count=capacity, offset=_TABLE_OFFSET)
        self._capacity = capacity
        self._ids: dict[str, int] = {}
        self._symbols: list[str] = [""]  # index = id; id 0 is never assigned
        self.name = seg.name
        self._reload()

    @classmethod
    def create(cls, name: str, capacity: int = 65536, *, plant: str = "") -> SymbolRegistry:
        """Create an empty registry for up to `capacity` symbols."""
        if not isinstance(capacity, int) or not 1 <= capacity < 2**32:
            raise RegistryError(f"`capacity` must be in 1..2**32-1, was {capacity!r}")
        seg = Segment.create(name, registry_bytes(capacity), kind=SegmentKind.REGISTRY, plant=plant)
        assert seg.buf is not None
        h = seg.buf[:_TABLE_OFFSET].cast("Q")
        h[_W_CAPACITY] = capacity
        h[_W_ENTRY_SIZE] = _ENTRY
        h.release()
        return cls(seg)

    @classmethod
    def attach(cls, name: str) -> SymbolRegistry:
        """Attach (writer after a restart, or any reader); loads the existing entries."""
        return attach_view(name, SegmentKind.REGISTRY, cls)

    def close(self) -> None:
        """Drop our views and unmap. Idempotent."""
        if self._seg.closed:
            return
        self._table = None  # type: ignore[assignment]
        self._h.release()
        self._seg.close()


    # ------------------------------------------------------------------ reading
    def _reload(self) -> None:
        count = self._h[_W_COUNT]  # read before the entries it covers
        known = len(self._symbols) - 1
        if count <= known:
            return
        for raw in self._table[known:count].tolist():
            symbol = raw.decode("utf-8")
            self._symbols.append(symbol)
            self._ids[symbol] = len(self._symbols) - 1

    def symbol(self, instrument_id: int) -> str | None:
        """The symbol of `instrument_id`, or None if no such id (yet)."""
        if 0 < instrument_id < len(self._symbols):
            return self._symbols[instrument_id]
        if instrument_id <= 0:
            return None
        self._reload()
        if instrument_id < len(self._symbols):
            return self._symbols[instrument_id]
        return None

    def lookup(self, symbol: str) -> int | None:
        """The id of `symbol` if registered (reader side; never appends)."""
        found = self._ids.get(symbol)
        if found is None:
            self._reload()
            found = self._ids.get(symbol)
        return found

    def symbols(self) -> dict[int, str]:
        """Every registered id and symbol."""
        self._reload()
        return {i: s for i, s in enumerate(self._symbols) if i}

    def __len__(self) -> int:
        self._reload()
        return len(self._symbols) - 1

    @property
    def capacity(self) -> int:
        return self._capacity

    # ------------------------------------------------------------------ writing (feed only)
    def id_for(self, symbol: str) -> int:
        """The id of `symbol`, appending it when new (single writer: the feed process)."""
        found = self._ids.get(symbol)
        if found is not None:
            return found
        self._reload()  # a restarted writer, or a second handle in the same process
        found = self._ids.get(symbol)
        if found is not None:
            return found
        raw = _encode(symbol)
        count = self._h[_W_COUNT]
        if count >= self._capacity:
            raise RegistryError(
                f"registry `{self.name}` is full ({self._capacity} symbols); cannot add `{symbol}`"
            )
        self._table[count] = raw  # the entry first ...
        self._h[_W_COUNT] = count + 1  # ... then the count: one aligned 8-byte store, last
        self._symbols.append(symbol)
        self._ids[symbol] = count + 1
        return count + 1


NO_INSTRUMENT = 0
"""The id of no instrument: registered ids are dense from 1, so a record carrying 0 is unroutable."""


def symbol_problem(symbol: object) -> str | None:
    """Why `symbol` cannot name an instrument (None if it can): one rule for configs, vendors
    and the registry. Symbols end up in ASCII topics and in `SYMBOL_MAX_BYTES`-byte entries."""
    if not isinstance(symbol, str) or not symbol or symbol != symbol.strip():
        return "must be a non-empty symbol without leading or trailing spaces"
    if not all(" " <= ch <= "~" for ch in symbol):
        return "must be printable ASCII (no NUL, control or non-ASCII characters)"
    if len(symbol) > SYMBOL_MAX_BYTES:
        return f"must be at most {SYMBOL_MAX_BYTES} characters"
    return None


def _encode(symbol: str) -> bytes:
    problem = symbol_problem(symbol)
    if problem:
        raise RegistryError(f"`symbol` {problem}, was {symbol!r}")
    return symbol.encode("ascii")
