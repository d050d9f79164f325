"""An append-only file written through a shared mapping whose pages a thread faults in ahead.

Why not ``writev``: the cost of a journal write is not the copy but the kernel finding a fresh
page-cache page for every 4 KiB appended, and on a virtual machine that cost swings eightfold
with the host's state (`benchmarks/bench_journal.py` measured 65 to 500 us per 256 KiB batch).
Here the worker only copies into pages that are already there: a thread of the worker runs a
compiled loop (``nogil``, so it never waits for nor holds the GIL) that asks the kernel to fault
in (``MADV_POPULATE_WRITE``, Linux >= 5.14) the next `AHEAD` bytes past what was written. If it
falls behind, the worker's copy faults the pages in itself, as ``writev`` would have; it never
waits for the thread, which runs on the other cores when the worker is pinned to one (a burst of
faults can hold a core for 10-20 ms on a VM, and the pinned worker could not move away). The
system calls are a ``syscall`` instruction inlined into the loop, so numba caches it; like the
rings' doorbell (`shm/doorbell.py`) this is x86-64 Linux only.

The file grows in `EXTENT` steps, each mapped on its own with `SLACK` bytes of overlap so an
entry that starts in an extent ends in the same mapping; at `close` it is cut to what was
written. A process killed before `close` leaves zeros after the last entry; the journal's reader
cuts them as a torn tail (`files.read_entries`). An append stores its first four bytes (the
first entry's magic) last, so a kill inside it leaves no entry that looks whole.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path
from typing import Any

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["MappedAppender", "EXTENT", "SLACK", "AHEAD", "warm_up"]

llvmlite.binding.initialize_native_asmparser()  # numba's code generator does not; the inline `syscall` needs it

EXTENT = 64 << 20
"""The file grows and is mapped in steps of this many bytes."""
SLACK = 8 << 20
"""Each mapping reaches this far into the next extent; a longer append goes through ``pwrite``."""
AHEAD = 16 << 20
"""How far past the written end the thread keeps pages faulted in."""
_STEP = 2 << 20
"""Bytes per ``madvise`` call (between calls the thread looks at what was written)."""

_SYS_READ, _SYS_MADVISE = 0, 28
_MADV_POPULATE_WRITE = 23
_EINTR, _EAGAIN = 4, 11
# control words: written by the appender, read by the thread (EXTENT_* and LIMIT change together
# when the appender moves to the next extent; a mix of old and new read in between only makes one
# `madvise` miss, which the appender's own page faults then cover)
_WRITTEN, _EXTENT_ADDRESS, _EXTENT_OFFSET, _LIMIT, _STOP, _EVENT, _POPULATED, _FAILED = range(8)

def _syscall4_typed(typingctx, number, a, b, c, d):
    """``syscall(number, a, b, c, d)`` inline; returns the raw result (``-errno`` on failure)."""
    sig = types.int64(number, a, b, c, d)

    def codegen(context, builder, signature, args):
        values = [context.cast(builder, value, ty, types.int64) for value, ty in zip(args, signature.args, strict=True)]
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)] * 5)
        asm = ir.InlineAsm(fnty, "syscall", "={rax},{rax},{rdi},{rsi},{rdx},{r10},~{rcx},~{r11},~{memory}",
                           side_effect=True)
        return builder.call(asm, values)

    return sig, codegen


_syscall4: Any = intrinsic(_syscall4_typed)
"""Called in compiled code as ``_syscall4(number, a, b, c, d)``."""


@numba.njit(cache=True, nogil=True)
def _populate(control: np.ndarray) -> None:
    """The thread's life: sleep on the eventfd until nudged, then fault pages in up to `AHEAD`
    past the written end (within the mapped extent), until `control[_STOP]`."""
    counter = np.zeros(1, np.uint64)
    while True:
        got = _syscall4(_SYS_READ, control[_EVENT], counter.ctypes.data, 8, 0)
        if got == -_EINTR or got == -_EAGAIN:
            continue
        if control[_STOP]:
            return
        while not control[_STOP]:
            offset, address, written = control[_EXTENT_OFFSET], control[_EXTENT_ADDRESS], control[_WRITTEN]
            start = control[_POPULATED]
            if start < written:  # behind: skip the worker's next step, never fault the same pages at once
                start = written + _STEP
            start = max(start, offset)
            end = min(written + AHEAD, control[_LIMIT])
            if start >= end:
                break
            size = min(_STEP, end - start)
            begin = start - start % 4096
            if _syscall4(_SYS_MADVISE, address + (begin - offset), size + (start - begin), _MADV_POPULATE_WRITE, 0) < 0:
                control[_FAILED] += 1  # an old kernel, or a race with the next extent: the copy faults instead
                break
            control[_POPULATED] = start + size


def _populate_elsewhere(control: np.ndarray) -> None:
    """The thread's body: off its process's core when the process is pinned to one, then `_populate`."""
    _leave_pinned_core()
    _populate(control)


def _leave_pinned_core() -> None:
    """Let the calling thread run on every core but the one its process is pinned to (if it is
    pinned to one and there are others). Faulting in fresh pages can hold a core for 10-20 ms
    (on this VM, a burst of host-side faults stalls the vCPU); a pinned worker on that core cannot
    move away, so its pages are faulted on another."""
    pinned = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - pinned
    if len(pinned) == 1 and others:
        os.sched_setaffinity(0, others)  # 0: the calling thread only


def warm_up() -> None:
    """Compile (or load from numba's cache) the thread's loop, so a worker's first journal file
    does not stall on it (the forkserver calls this before forking: `cli/preload`)."""
    _populate.compile((types.int64[::1],))


class MappedAppender:
    """Appends to `path` from byte `start` (the file's size when resuming; 0 for a new file).

    `extent` and `slack` (whole pages) are `EXTENT` and `SLACK` but for tests that cross extents."""

    def __init__(self, path: Path, start: int = 0, *, extent: int = EXTENT, slack: int = SLACK):
        if extent % mmap.PAGESIZE or slack % mmap.PAGESIZE or extent <= 0:
            raise ValueError(f"`extent` and `slack` must be whole pages of {mmap.PAGESIZE} bytes; were {extent}, {slack}")
        self.path = path
        self._extent_size, self._slack = extent, slack
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.end = start
        """Bytes of the file that hold what was appended."""
        self._extent = -1
        self._view: np.ndarray | None = None
        """The current extent's mapping (the `mmap` is unmapped when the last view of it goes)."""
        self._control = np.zeros(8, np.int64)
        self._control[_WRITTEN] = start
        self._event = os.eventfd(0, os.EFD_CLOEXEC)
        self._control[_EVENT] = self._event
        self._nudged_at = -AHEAD
        self._map_extent(start // extent)
        self._thread = threading.Thread(target=_populate_elsewhere, args=(self._control,), name="journal-populate",
                                        daemon=True)
        self._thread.start()
        self._nudge()

    def append(self, parts: list[bytes | memoryview]) -> int:
        """Copy `parts` to the end of the file, the first four bytes last; bytes appended.
        The first part (an entry's header) holds at least those four bytes."""
        if not parts or len(parts[0]) < 4:
            raise ValueError("an append's first part must hold at least 4 bytes (an entry's magic)")
        size = sum(len(part) for part in parts)
        if self.end >= (self._extent + 1) * self._extent_size:
            self._map_extent(self.end // self._extent_size)
        offset = self.end - self._extent * self._extent_size
        if offset + size > self._extent_size + self._slack:  # bigger than an entry gets: straight through the page cache
            joined = b"".join(bytes(part) for part in parts)
            self._pwrite_all(joined[4:], self.end + 4)
            self._pwrite_all(joined[:4], self.end)
        else:
            view = self._view
            assert view is not None
            at = offset
            for i, part in enumerate(parts):
                data = np.frombuffer(part, np.uint8)
                skip = 4 if i == 0 else 0
                view[at + skip:at + len(data)] = data[skip:]
                at += len(data)
            view[offset:offset + 4] = np.frombuffer(parts[0], np.uint8)[:4]
        self._advance(size)
        return size

    def reserve(self, size: int) -> np.ndarray | None:
        """`size` bytes at the end of the file to fill in place (the worker's ring copies a batch
        straight into them), then `commit`; None if they do not fit one mapping. Valid until the
        next call of any other method; nothing of it is in the file before `commit`."""
        if self.end >= (self._extent + 1) * self._extent_size:
            self._map_extent(self.end // self._extent_size)
        offset = self.end - self._extent * self._extent_size
        if offset + size > self._extent_size + self._slack:
            return None
        assert self._view is not None
        return self._view[offset:offset + size]

    def commit(self, head: bytes, size: int) -> None:
        """Append the `size` bytes `reserve` lent, after storing `head` at their start, its first
        four bytes last (so the entry looks whole only once it is)."""
        offset = self.end - self._extent * self._extent_size
        view = self._view
        assert view is not None and len(head) >= 4 and offset + size <= len(view)
        data = np.frombuffer(head, np.uint8)
        view[offset + 4:offset + len(data)] = data[4:]
        view[offset:offset + 4] = data[:4]
        self._advance(size)

    @property
    def populated(self) -> int:
        """How far (file offset) the thread has faulted pages in."""
        return int(self._control[_POPULATED])

    def sync(self) -> None:
        """``fdatasync``: writes back the pages the mapping dirtied, as for ``write``."""
        os.fdatasync(self._fd)

    def close(self, *, sync: bool = False) -> None:
        """Stop the thread, cut the file to what was appended, unmap and close."""
        if self._fd < 0:
            return
        self._control[_STOP] = 1
        os.eventfd_write(self._event, 1)
        self._thread.join()
        os.close(self._event)
        self._unmap()
        os.ftruncate(self._fd, self.end)
        if sync:
            os.fdatasync(self._fd)
        os.close(self._fd)
        self._fd = -1

    # ------------------------------------------------------------------ internals

    def _advance(self, size: int) -> None:
        self.end += size
        self._control[_WRITTEN] = self.end
        if self.end - self._nudged_at >= AHEAD // 2:
            self._nudge()

    def _nudge(self) -> None:
        self._nudged_at = self.end
        os.eventfd_write(self._event, 1)

    def _map_extent(self, extent: int) -> None:
        """Map extent `extent` (and `SLACK` past it), growing the file to cover it."""
        self._unmap()
        offset, length = extent * self._extent_size, self._extent_size + self._slack
        if os.fstat(self._fd).st_size < offset + length:
            os.ftruncate(self._fd, offset + length)
        mapping = mmap.mmap(self._fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self._extent, self._view = extent, np.frombuffer(mapping, np.uint8)
        address = self._view.__array_interface__["data"][0]
        control = self._control
        control[_EXTENT_ADDRESS], control[_EXTENT_OFFSET], control[_LIMIT] = address, offset, offset + length
        self._nudge()

    def _unmap(self) -> None:
        """Let go of the extent: unmapped now, or when the last batch still viewing it is gone."""
        if self._view is not None:
            self._view = None
            self._control[_LIMIT] = 0  # the thread stops populating this extent

    def _pwrite_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self._fd, view, offset)
            view, offset = view[done:], offset + done
