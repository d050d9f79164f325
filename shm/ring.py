"""Single-producer single-consumer ring of fixed 64-byte records in shared memory.

The producer copies a batch in as raw bytes, then publishes its new write position with
one aligned 8-byte store written last; the consumer reads the write position, copies the
records out, then publishes its read position the same way. Positions are monotonically
increasing record counts (slot = position & (capacity - 1)), each on its own cache line,
so a restarted producer or consumer re-attaches and carries on where the header says.
`docs/rings.md` gives the byte layout and why this is safe on x86-64.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .doorbell import fence, futex_wait_any, futex_wake
from .idle import IdleStrategy
from .records import RECORD_DTYPE, RECORD_SIZE
from .segments import HEADER_SIZE, Segment, SegmentError, SegmentKind, SegmentView, attach_view

__all__ = ["Ring", "RingError", "Overflow", "ring_bytes", "RING_HEADER_SIZE", "wait_for_records"]

Overflow = Literal["drop", "block"]

RING_HEADER_SIZE = 256
"""Common header (64) + config line + producer line + consumer line, 64 bytes each."""

# u64 word indexes into the header
_W_CAPACITY = 8  # line 1: configuration, written once at creation
_W_RECORD_SIZE = 9
_W_OVERFLOW = 10
_W_DATA_OFFSET = 11
_W_WRITE = 16  # line 2: written by the producer only
_W_DROPPED = 17
_W_PRODUCER_HB = 18
_W_BLOCKED = 19
_W_BELL = 20  # the doorbell's futex word (low 32 bits): bumped before each wake-up
_W_READ = 24  # line 3: written by the consumer only
_W_CONSUMER_HB = 25
_W_ASLEEP = 26  # 1 while the consumer is (about to be) blocked on the bell
_BELL_OFFSET = _W_BELL * 8

_OVERFLOW_CODE = {"drop": 0, "block": 1}
_OVERFLOW_NAME = {v: k for k, v in _OVERFLOW_CODE.items()}
_EMPTY = np.empty(0, dtype=RECORD_DTYPE)
_EMPTY.flags.writeable = False


class RingError(SegmentError):
    """A ring was created or used wrongly (bad capacity, bad batch)."""


def ring_bytes(capacity: int) -> int:
    """Size of the segment for a ring of `capacity` records (for space checks up front)."""
    return RING_HEADER_SIZE + capacity * RECORD_SIZE


def _check_capacity(capacity: int) -> None:
    if not isinstance(capacity, int) or capacity < 2 or capacity & (capacity - 1):
        raise RingError(f"`capacity` must be a power of two >= 2 (records), was {capacity!r}")


class Ring(SegmentView):
    """An SPSC ring of `RECORD_DTYPE` records in a shared-memory segment.

    One process publishes, one consumes; any number may read the counters (status).
    """

    __slots__ = (
        "_seg",
        "_h",
        "_data",
        "_capacity",
        "_mask",
        "_overflow",
        "_out",
        "_out_bytes",
        "_bell",
        "name",
    )

    def __init__(self, seg: Segment) -> None:
        buf = seg.buf
        assert buf is not None
        h = buf[:RING_HEADER_SIZE].cast("Q")
        capacity = h[_W_CAPACITY]
        record_size = h[_W_RECORD_SIZE]
        offset = h[_W_DATA_OFFSET]
        overflow = h[_W_OVERFLOW]
        if record_size != RECORD_SIZE:
            h.release()
            raise RingError(f"ring `{seg.name}` has `record_size` {record_size}, expected {RECORD_SIZE}")
        if capacity < 2 or capacity & (capacity - 1) or overflow not in _OVERFLOW_NAME:
            h.release()
            raise RingError(f"ring `{seg.name}` has a corrupt header (capacity {capacity}, overflow {overflow})")
        if offset + capacity * RECORD_SIZE > seg.size:
            h.release()
            raise RingError(f"ring `{seg.name}` is {seg.size} bytes, too small for {capacity} records")
        self._seg = seg
        self._h = h
        self._data = buf[offset : offset + capacity * RECORD_SIZE]
        self._capacity = capacity
        self._mask = capacity - 1
        self._overflow = _OVERFLOW_NAME[overflow]
        self._out: np.ndarray | None = None  # the last `out` given to consume, and its bytes
        self._out_bytes: memoryview | None = None
        word = ctypes.c_char.from_buffer(buf, _BELL_OFFSET)  # an export of `buf`: dropped at once
        self._bell = ctypes.addressof(word)
        del word
        self.name = seg.name

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, name: str, capacity: int, *, overflow: Overflow = "drop", plant: str = "") -> Ring:
        """Create the segment (space checked, pages touched) and its header."""
        _check_capacity(capacity)
        if overflow not in _OVERFLOW_CODE:
            raise RingError(f"`overflow` must be `drop` or `block`, was `{overflow!r}`")
        seg = Segment.create(name, ring_bytes(capacity), kind=SegmentKind.RING, plant=plant)
        try:
            assert seg.buf is not None
            h = seg.buf[HEADER_SIZE:RING_HEADER_SIZE].cast("Q")
            base = HEADER_SIZE // 8
            h[_W_CAPACITY - base] = capacity
            h[_W_RECORD_SIZE - base] = RECORD_SIZE
            h[_W_OVERFLOW - base] = _OVERFLOW_CODE[overflow]
            h[_W_DATA_OFFSET - base] = RING_HEADER_SIZE
            h.release()
            return cls(seg)
        except BaseException:
            seg.close()
            seg.unlink()
            raise

    @classmethod
    def attach(cls, name: str) -> Ring:
        """Attach to an existing ring from any process; refuses another kind or layout."""
        return attach_view(name, SegmentKind.RING, cls)

    def close(self) -> None:
        """Drop our views and unmap. Idempotent; the ring itself stays."""
        if self._seg.closed:
            return
        if self._out_bytes is not None:
            self._out_bytes.release()
            self._out_bytes = self._out = None
        self._h.release()
        self._data.release()
        self._seg.close()


    def __repr__(self) -> str:
        if self._seg.closed:
            return f"Ring({self.name!r}, closed)"
        return (
            f"Ring({self.name!r}, capacity={self._capacity}, overflow={self._overflow!r}, "
            f"produced={self.produced}, consumed={self.consumed}, dropped={self.dropped})"
        )

    # ------------------------------------------------------------------ producer
    def publish(
        self,
        records: np.ndarray,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Copy `records` in and publish them; return how many were written.

        ``drop``: what does not fit is counted as dropped, never waits. ``block``: waits
        (bounded idle strategy) for room until all is written, `timeout` seconds pass or
        `should_stop()` is true; what is then left is counted as dropped.
        """
        n = len(records)
        if n == 0:
            return 0
        if records.dtype is not RECORD_DTYPE and records.dtype != RECORD_DTYPE:
            raise RingError(f"`records` must have RECORD_DTYPE, was `{records.dtype}`")
        if not records.flags.c_contiguous:
            records = np.ascontiguousarray(records)
        src = records.view(np.uint8).data
        h = self._h
        cap = self._capacity
        write = h[_W_WRITE]
        written = self._put(src, 0, n, write, cap - (write - h[_W_READ]))
        if written == n or self._overflow == "drop":
            if written < n:
                h[_W_DROPPED] += n - written
            return written
        return self._publish_blocking(src, n, written, timeout, should_stop)

    def _put(self, src: memoryview, start: int, n: int, write: int, free: int) -> int:
        """Copy records ``src[start:start+k]`` at position `write`; publish; return k."""
        k = n - start if n - start < free else free
        if k <= 0:
            return 0
        slot = write & self._mask
        first = self._capacity - slot
        data = self._data
        a = start * RECORD_SIZE
        if k <= first:
            data[slot * RECORD_SIZE : (slot + k) * RECORD_SIZE] = src[a : a + k * RECORD_SIZE]
        else:
            b = a + first * RECORD_SIZE
            data[slot * RECORD_SIZE :] = src[a:b]
            data[: (k - first) * RECORD_SIZE] = src[b : a + k * RECORD_SIZE]
        h = self._h
        h[_W_WRITE] = write + k  # the publish: one aligned 8-byte store, last
        fence()  # the store above is visible before the flag below is read (docs/rings.md, "Doorbell")
        if h[_W_ASLEEP]:
            h[_W_BELL] = (h[_W_BELL] + 1) & 0xFFFFFFFF
            futex_wake(self._bell)
        return k

    def _publish_blocking(
        self,
        src: memoryview,
        n: int,
        done: int,
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
    ) -> int:
        h = self._h
        cap = self._capacity
        deadline = None if timeout is None else time.monotonic() + timeout
        idle = IdleStrategy()
        h[_W_BLOCKED] += 1
        while done < n:
            write = h[_W_WRITE]
            k = self._put(src, done, n, write, cap - (write - h[_W_READ]))
            if k:
                done += k
                idle.reset()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
            if should_stop is not None and should_stop():
                break
            idle.idle(False)
        if done < n:
            h[_W_DROPPED] += n - done
        return done

    def heartbeat(self) -> None:
        """Producer liveness: store the current time (ns) in the header."""
        self._h[_W_PRODUCER_HB] = time.time_ns()

    # ------------------------------------------------------------------ consumer
    def consume(self, max_records: int, out: np.ndarray | None = None, *, release: bool = True) -> np.ndarray:
        """Take up to `max_records` records; never blocks; empty array when none wait.

        The result is a private copy (into `out` when given: a C-contiguous RECORD_DTYPE
        array, the result is then a view of its first rows). With ``release=False`` the read
        position stays where it was: the records are read again unless `release_to` moves it
        on (a journaling consumer releases them only once they are on disk).
        """
        h = self._h
        read = h[_W_READ]
        n = h[_W_WRITE] - read  # acquire: the write position is read before the payload
        if n > max_records:
            n = max_records
        if n <= 0:
            return _EMPTY
        if out is None:
            dst = np.empty(n * RECORD_SIZE, dtype=np.uint8)
            result = dst.view(RECORD_DTYPE)
            dmv = dst.data
        else:
            if out is not self._out:  # a consumer loop passes the same buffer every time
                self._set_out(out)
            if len(out) < n:
                n = len(out)
                if n == 0:
                    return _EMPTY
            result = out[:n]
            dmv = self._out_bytes[: n * RECORD_SIZE]  # type: ignore[index]
        slot = read & self._mask
        first = self._capacity - slot
        data = self._data
        if n <= first:
            dmv[:] = data[slot * RECORD_SIZE : (slot + n) * RECORD_SIZE]
        else:
            cut = first * RECORD_SIZE
            dmv[:cut] = data[slot * RECORD_SIZE :]
            dmv[cut:] = data[: (n - first) * RECORD_SIZE]
        if release:
            h[_W_READ] = read + n  # release the slots: one aligned 8-byte store, last
        return result

    def tail(self, max_records: int) -> np.ndarray:
        """A copy of the last `max_records` records written (fewer if fewer are still held).

        For a producer restarting after a crash: what it wrote last tells it where to resume.
        A slot is overwritten only a full capacity later, so the last `capacity` records written
        are intact whether or not they have been consumed.
        """
        write = self._h[_W_WRITE]
        n = min(max_records, write, self._capacity)
        out = np.empty(n, dtype=RECORD_DTYPE)
        if n <= 0:
            return out
        dst = out.view(np.uint8).data
        slot = (write - n) & self._mask
        first = self._capacity - slot
        if n <= first:
            dst[:] = self._data[slot * RECORD_SIZE : (slot + n) * RECORD_SIZE]
        else:
            cut = first * RECORD_SIZE
            dst[:cut] = self._data[slot * RECORD_SIZE :]
            dst[cut:] = self._data[: (n - first) * RECORD_SIZE]
        return out

    def release_to(self, position: int) -> None:
        """Move the read position on to `position` (records read with ``release=False``)."""
        h = self._h
        read = h[_W_READ]
        if not read <= position <= h[_W_WRITE]:
            raise RingError(f"`position` must be in {read}..{h[_W_WRITE]} (read..write); was {position}")
        h[_W_READ] = position

    def _set_out(self, out: np.ndarray) -> None:
        if out.dtype != RECORD_DTYPE or not out.flags.c_contiguous or not out.flags.writeable:
            raise RingError(f"`out` must be a writeable C-contiguous RECORD_DTYPE array, was `{out.dtype}`")
        if self._out_bytes is not None:
            self._out_bytes.release()
        self._out = out
        self._out_bytes = out.view(np.uint8).data

    def consumer_attached(self) -> None:
        """A new consumer lowers the asleep flag a killed one may have left up (until then the
        producer pays a wake-up call per publish)."""
        self._h[_W_ASLEEP] = 0

    def consumer_heartbeat(self) -> None:
        """Consumer liveness: store the current time (ns) in the header."""
        self._h[_W_CONSUMER_HB] = time.time_ns()

    # ------------------------------------------------------------------ status (any process)
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def overflow(self) -> Overflow:
        return self._overflow  # type: ignore[return-value]

    @property
    def produced(self) -> int:
        """Records written into the ring since creation (the write position)."""
        return self._h[_W_WRITE]

    @property
    def consumed(self) -> int:
        """Records taken out since creation (the read position)."""
        return self._h[_W_READ]

    @property
    def dropped(self) -> int:
        """Records the producer offered that did not fit (overflow)."""
        return self._h[_W_DROPPED]

    @property
    def blocked(self) -> int:
        """How many `publish` calls had to wait for room (``block`` policy)."""
        return self._h[_W_BLOCKED]

    @property
    def fill(self) -> int:
        """Records waiting to be consumed."""
        read = self._h[_W_READ]
        return max(0, self._h[_W_WRITE] - read)

    @property
    def consumer_asleep(self) -> bool:
        """Whether the consumer has declared itself asleep on the doorbell."""
        return bool(self._h[_W_ASLEEP])

    @property
    def producer_heartbeat_ns(self) -> int:
        return self._h[_W_PRODUCER_HB]

    @property
    def consumer_heartbeat_ns(self) -> int:
        return self._h[_W_CONSUMER_HB]

    @property
    def creator_pid(self) -> int:
        return self._seg.header.creator_pid

    @property
    def plant(self) -> str:
        return self._seg.header.plant

    def stats(self) -> dict[str, int | str]:
        """All counters at once (one read each), for status displays."""
        h = self._h
        read = h[_W_READ]
        write = h[_W_WRITE]
        return {
            "name": self.name,
            "capacity": self._capacity,
            "overflow": self._overflow,
            "produced": write,
            "consumed": read,
            "fill": max(0, write - read),
            "dropped": h[_W_DROPPED],
            "blocked": h[_W_BLOCKED],
            "producer_heartbeat_ns": h[_W_PRODUCER_HB],
            "consumer_heartbeat_ns": h[_W_CONSUMER_HB],
            "creator_pid": self.creator_pid,
        }


def wait_for_records(rings: Sequence[Ring], timeout: float) -> None:
    """Consumer of `rings`: block until a producer publishes into one of them, `timeout`
    seconds pass or a signal arrives; return at once when records already wait.

    For each ring: read the bell, raise the asleep flag, fence, look at the write position, and
    only then block on the bells with the values read (docs/rings.md, "Doorbell"): a producer
    either sees the flag and rings, or published before the look, which then sees its records.
    """
    words = []
    for ring in rings:
        h = ring._h
        words.append((ring._bell, h[_W_BELL]))
        h[_W_ASLEEP] = 1
    try:
        fence()
        for ring in rings:
            if ring._h[_W_WRITE] != ring._h[_W_READ]:
                return
        futex_wait_any(words, timeout)
    finally:
        for ring in rings:
            ring._h[_W_ASLEEP] = 0
