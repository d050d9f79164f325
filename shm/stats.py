"""Process table: one shared-memory row per plant process, for heartbeats and `streamctl status`.

Processes must not pay for telemetry with sockets or locks: each one writes counters into
its own fixed slot (one segment per plant, ``stc_<plant>_stats``) and the supervisor and
``status`` read them all. Every numeric field is 8 bytes and 8-byte aligned, and writing it
is one aligned 8-byte store, so a reader never sees a torn number. Each process writes only
its own slot; the supervisor writes its own columns (`SUPERVISOR_FIELDS`).
"""

from __future__ import annotations

import enum
import time
from typing import Any

import numpy as np

from .segments import HEADER_SIZE, Segment, SegmentError, SegmentKind, SegmentView, attach_view
from .text import printable, shorten

__all__ = [
    "ProcessTable",
    "ProcessSlot",
    "Role",
    "State",
    "SLOT_DTYPE",
    "COUNTERS",
    "CounterName",
    "SUPERVISOR_FIELDS",
    "RECONNECT_ATTEMPT",
    "LATENCY_BOUNDS_NS",
    "StatsError",
    "stats_bytes",
]


class State(enum.IntEnum):
    """Life cycle of a process in its slot."""

    EMPTY = 0
    STARTING = 1
    READY = 2
    STOPPING = 3
    EXITED = 4
    FAILED = 5
    RECONNECTING = 6
    """A live feed lost its connection and is retrying (or has not had a record since)."""


class Role(enum.StrEnum):
    """What a process in the plant does; the string is what the table and `status` show."""

    HUB = "hub"
    WORKER = "worker"
    INGEST = "ingest"
    SINK = "sink"


_FIELDS = [
    ("name", "S32"),  # 0
    ("role", "S8"),  # 32  Role
    ("uss", "<u8"),  # 40  supervisor: unique set size (memory only this process holds), bytes
    ("pid", "<i8"),  # 48
    ("cpu", "<i8"),  # 56  -1 = not pinned
    ("state", "<u8"),  # 64  State
    ("started_ns", "<i8"),  # 72
    ("heartbeat_ns", "<i8"),  # 80
    ("restarts", "<u8"),  # 88  supervisor
    ("records_in", "<u8"),  # 96
    ("records_out", "<u8"),  # 104
    ("messages_out", "<u8"),  # 112
    ("overflow", "<u8"),  # 120 drops: ring full
    ("malformed", "<u8"),  # 128 drops: bad input
    ("late", "<u8"),  # 136 drops: late ticks
    ("gaps", "<u8"),  # 144 vendor sequence gaps
    ("errors", "<u8"),  # 152
    ("reconnects", "<u8"),  # 160
    ("exit_code", "<i8"),  # 168 supervisor: last exit code
    ("progress_done", "<f8"),  # 176 replay progress
    ("progress_total", "<f8"),  # 184
    ("rate_in", "<f8"),  # 192 supervisor: records_in per second
    ("rate_out", "<f8"),  # 200 supervisor: records_out per second
    ("rss", "<u8"),  # 208 supervisor: resident memory, bytes
    ("cpu_pct", "<f8"),  # 216 supervisor: CPU percent
    ("reconnect_attempt", "<u8"),  # 224 live feeds: reconnect attempt in progress (0 = none); survives restarts
    ("backlog", "<u8"),  # 232 sinks: rows received and not yet in the store
    ("lag_ns", "<i8"),  # 240 sinks: wall clock minus the receive time of the newest row stored
    ("detail", "S128"),  # 248 free text (why FAILED ...)
    ("duplicates", "<u8"),  # 376 feeds: copies of packets already received (the other feed of an A/B pair)
    ("pss", "<u8"),  # 384 supervisor: proportional set size (shared pages split among their users), bytes
    ("cpu_seconds", "<f8"),  # 392 supervisor: user + system CPU time
    ("latency_sum_s", "<f8"),  # 400 workers: sum of ts_recv -> publish (seconds) over the records counted below
    ("latency_counts", "<u8", (13,)),  # 408 workers: records per bucket of LATENCY_BOUNDS_NS (+Inf last), ends at 512
]
SLOT_DTYPE = np.dtype(_FIELDS)
"""One slot: 512 bytes (8 cache lines), numeric fields 8 bytes (or arrays of them) and 8-byte aligned."""
assert SLOT_DTYPE.itemsize == 512 and SLOT_DTYPE.itemsize % 64 == 0

LATENCY_BOUNDS_NS = np.array([25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
                              10_000_000, 25_000_000, 100_000_000, 1_000_000_000], dtype=np.int64)
"""Upper bounds (inclusive, ns) of the latency histogram buckets; the last bucket is +Inf."""
assert len(LATENCY_BOUNDS_NS) + 1 == SLOT_DTYPE.fields["latency_counts"][0].shape[0]  # type: ignore[index]


def _field_layout(dtype: np.dtype) -> dict[str, tuple[np.dtype, int]]:
    """Field name -> (dtype, byte offset), in slot order."""
    assert dtype.fields is not None and dtype.names is not None
    return {name: (dtype.fields[name][0], dtype.fields[name][1]) for name in dtype.names}


_LAYOUT = _field_layout(SLOT_DTYPE)
assert all(len(role.encode()) <= _LAYOUT["role"][0].itemsize for role in Role)

_STRINGS = {"name", "role", "detail"}
_ARRAYS = {"latency_counts"}
_ROLES = tuple(role.value for role in Role)
_TRUNCATED = {"detail"}  # free text is escaped and cut to fit (`shorten`); names are refused when too long


class CounterName(enum.StrEnum):
    """The monotonic counters of a slot (a StrEnum: each is also its field name)."""

    RECORDS_IN = "records_in"
    RECORDS_OUT = "records_out"
    MESSAGES_OUT = "messages_out"
    OVERFLOW = "overflow"
    """Drops: ring full."""
    MALFORMED = "malformed"
    """Drops: bad input."""
    LATE = "late"
    """Drops: late ticks."""
    GAPS = "gaps"
    """Vendor sequence gaps."""
    ERRORS = "errors"
    RECONNECTS = "reconnects"
    RESTARTS = "restarts"
    DUPLICATES = "duplicates"
    """Copies of input already received (CME's feed B of each packet feed A delivered): not drops."""


COUNTERS = tuple(CounterName)
"""Monotonic counters a process adds to."""

SUPERVISOR_FIELDS = ("restarts", "exit_code", "rate_in", "rate_out", "rss", "uss", "pss", "cpu_pct", "cpu_seconds")
"""Columns the supervisor writes into every slot (the process never does)."""

RECONNECT_ATTEMPT = "reconnect_attempt"
"""A live feed's reconnect attempt in progress (0 = none); kept here so that it survives a
restart of the feed process (the supervisor never clears a slot it restarts)."""

_TABLE_OFFSET = HEADER_SIZE + 64  # common header + table line (slots, slot size)
_W_SLOTS = 8
_W_SLOT_SIZE = 9


class StatsError(SegmentError):
    """A process-table field or slot was used wrongly."""


def stats_bytes(slots: int) -> int:
    """Size of the segment for a table of `slots` slots."""
    return _TABLE_OFFSET + slots * SLOT_DTYPE.itemsize


def _number_fields() -> dict[str, tuple[str, int]]:
    out = {}
    for name, (dt, offset) in _LAYOUT.items():
        if name in _STRINGS or name in _ARRAYS:
            continue
        assert dt.itemsize == 8 and offset % 8 == 0, name
        out[name] = ({"i": "q", "u": "Q", "f": "d"}[dt.kind], offset // 8)
    return out


_NUMBERS = _number_fields()


class ProcessSlot:
    """One process's row. Numeric writes are single aligned 8-byte stores."""

    __slots__ = ("index", "_row", "_views", "_table")

    def __init__(self, table: ProcessTable, index: int) -> None:
        self.index = index
        self._table = table
        self._row = table._rows[index : index + 1]
        raw = table._seg.buf[  # type: ignore[index]
            _TABLE_OFFSET + index * SLOT_DTYPE.itemsize : _TABLE_OFFSET + (index + 1) * SLOT_DTYPE.itemsize
        ]
        self._views: dict[str, memoryview[Any]] = {code: raw.cast(code) for code in ("q", "Q", "d")}
        raw.release()

    def _field(self, field: str) -> tuple[memoryview[Any], int]:
        try:
            code, word = _NUMBERS[field]
        except KeyError:
            raise StatsError(f"`field` must be a numeric slot field, was `{field}`") from None
        return self._views[code], word

    def add(self, field: str, n: float = 1) -> None:
        """Add `n` to counter `field` (only the slot's owner writes it; a float only to a float field)."""
        view, word = self._field(field)
        view[word] += n

    def set(self, field: str, value: Any) -> None:
        """Set `field`; strings are UTF-8 encoded (`detail` is escaped and cut at a word to fit,
        names refused).

        ``role`` must be a `Role` (or its string): an unknown role is refused, not stored.
        """
        if field == "role" and value not in _ROLES:
            raise StatsError(f"`role` must be one of {', '.join(_ROLES)}, was `{value}`")
        if field in _STRINGS:
            size = _LAYOUT[field][0].itemsize
            text = shorten(printable(str(value)), size) if field in _TRUNCATED else str(value)
            raw = text.encode("utf-8")
            if len(raw) > size:
                raise StatsError(f"`{field}` must be at most {size} UTF-8 bytes, was `{value}`")
            self._row[field] = raw
            return
        view, word = self._field(field)
        try:
            view[word] = float(value) if view.format == "d" else int(value)
        except (TypeError, ValueError, OverflowError):
            raise StatsError(f"`{field}` must be a number in range, was `{value!r}`") from None

    def get(self, field: str) -> Any:
        """Current value of `field` (str for text fields, `Role` for ``role``, `State` for ``state``)."""
        if field in _STRINGS:
            return _text(field, self._row[field][0])
        view, word = self._field(field)
        value = view[word]
        return State(value) if field == "state" and value in State._value2member_map_ else value

    def array(self, field: str) -> np.ndarray:
        """The writable view of an array field (``latency_counts``): its owner adds into it in place,
        each element one aligned 8-byte store."""
        if field not in _ARRAYS:
            raise StatsError(f"`field` must be an array slot field ({', '.join(sorted(_ARRAYS))}), was `{field}`")
        return self._row[field][0]

    def heartbeat(self) -> None:
        """Liveness: store the current time (ns)."""
        view, word = self._field("heartbeat_ns")
        view[word] = time.time_ns()

    def clear(self) -> None:
        """Zero the whole slot (EMPTY); for the supervisor before (re)assigning it."""
        self._row[0] = np.zeros((), dtype=SLOT_DTYPE)

    def snapshot(self) -> dict[str, Any]:
        """The slot as a dict (str fields decoded, ``role`` a `Role`, ``state`` a `State`)."""
        return _row_dict(self.index, self._row[0])

    def _release(self) -> None:
        for view in self._views.values():
            view.release()
        self._views = {}
        self._row = None  # type: ignore[assignment]


def _text(field: str, raw: bytes) -> str:
    """A text field decoded; ``role`` as a `Role` once set (an empty slot has ``""``)."""
    text = bytes(raw).decode("utf-8", "replace")
    return Role(text) if field == "role" and text in _ROLES else text


def _row_dict(index: int, row: np.void) -> dict[str, Any]:
    out: dict[str, Any] = {"slot": index}
    for name in _LAYOUT:
        value = row[name]
        if name in _STRINGS:
            out[name] = _text(name, value)
        elif name in _ARRAYS:
            out[name] = [int(v) for v in value]
        elif name == "state":  # a State (an int, with `.name`), or the raw int if unknown
            out[name] = State(int(value)) if int(value) in State._value2member_map_ else int(value)
        else:
            out[name] = value.item()
    return out


class ProcessTable(SegmentView):
    """The plant's process table (one segment, N fixed slots)."""

    __slots__ = ("_seg", "_rows", "_slots", "name", "__weakref__")

    def __init__(self, seg: Segment) -> None:
        assert seg.buf is not None
        h = seg.buf[:_TABLE_OFFSET].cast("Q")
        slots, slot_size = h[_W_SLOTS], h[_W_SLOT_SIZE]
        h.release()
        if slot_size != SLOT_DTYPE.itemsize or slots < 1 or stats_bytes(slots) > seg.size:
            raise StatsError(f"process table `{seg.name}` has a corrupt header (slots {slots}, slot {slot_size})")
        self._seg = seg
        self._rows = np.frombuffer(seg.buf, dtype=SLOT_DTYPE, count=slots, offset=_TABLE_OFFSET)
        self._slots: dict[int, ProcessSlot] = {}
        self.name = seg.name

    # `create` has the same shape as Ring's and SymbolRegistry's on purpose: each
    # segment kind writes and checks its own header words, and the shared part is Segment's.
    @classmethod
    def create(cls, name: str, slots: int, *, plant: str = "") -> ProcessTable:
        """Create a table of `slots` empty slots."""
        if not isinstance(slots, int) or not 1 <= slots <= 4096:
            raise StatsError(f"`slots` must be in 1..4096, was {slots!r}")
        seg = Segment.create(name, stats_bytes(slots), kind=SegmentKind.STATS, plant=plant)
        assert seg.buf is not None
        h = seg.buf[:_TABLE_OFFSET].cast("Q")
        h[_W_SLOTS] = slots
        h[_W_SLOT_SIZE] = SLOT_DTYPE.itemsize
        h.release()
        return cls(seg)

    @classmethod
    def attach(cls, name: str) -> ProcessTable:
        """Attach to the plant's table from any process; refuses another kind or layout."""
        return attach_view(name, SegmentKind.STATS, cls)

    def __len__(self) -> int:
        return len(self._rows)

    def slot(self, index: int) -> ProcessSlot:
        """The slot at `index` (cached: the same object on every call)."""
        if not 0 <= index < len(self._rows):
            raise StatsError(f"`slot` must be in 0..{len(self._rows) - 1}, was {index}")
        found = self._slots.get(index)
        if found is None:
            found = self._slots[index] = ProcessSlot(self, index)
        return found

    def snapshot(self, *, include_empty: bool = False) -> list[dict[str, Any]]:
        """Every used slot as a dict (a consistent-enough copy taken at once)."""
        rows = self._rows.copy()
        return [
            _row_dict(i, row)
            for i, row in enumerate(rows)
            if include_empty or int(row["state"]) != State.EMPTY or row["name"]
        ]

    def close(self) -> None:
        """Drop every view (slots included) and unmap. Idempotent."""
        if self._seg.closed:
            return
        for slot in self._slots.values():
            slot._release()
        self._slots.clear()
        self._rows = None  # type: ignore[assignment]
        self._seg.close()


