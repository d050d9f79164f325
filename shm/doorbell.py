"""The rings' doorbell: a futex word in shared memory, and the one fence Python lacks.

A consumer with nothing to read declares itself asleep in each ring's header and blocks in
``futex_waitv`` on the rings' bell words; a producer that has published reads that flag and
only when it is up bumps the bell and calls ``FUTEX_WAKE``. Under load the flag is down, so
publishing costs one fence and one load, no system call. A futex is keyed by the shared page
itself, so unrelated processes need no file descriptor passed between them and a producer or
consumer killed and restarted simply re-attaches (`docs/rings.md`, "Doorbell").

The two sides form a Dekker pair (store my word, then load the other's), which x86-64's
store buffer may reorder; CPython has no fence, so `fence` is a two-instruction function
compiled once with llvmlite (numba's code generator, already a dependency).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["fence", "futex_wake", "futex_wait_any", "DoorbellError", "MAX_WAIT_WORDS"]

_SYS_FUTEX = 202  # x86-64: the only architecture the rings support (docs/rings.md)
_SYS_FUTEX_WAITV = 449  # Linux >= 5.16, the same number on every architecture
_FUTEX_WAKE = 1  # shared (not FUTEX_PRIVATE_FLAG): the word is in a segment of several processes
_FUTEX2_SIZE_U32 = 0x02
_CLOCK_MONOTONIC = 1
_WAKE_ALL = 0x7FFFFFFF
MAX_WAIT_WORDS = 128
"""The kernel's FUTEX_WAITV_MAX: the most rings one consumer can sleep on (so the most feeds)."""

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class DoorbellError(OSError):
    """The kernel refused a futex call for a reason other than a wake-up, a signal or a timeout."""


class _Waiter(ctypes.Structure):
    """``struct futex_waitv``."""

    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_fence: Callable[[], None] | None = None
_engine = None  # keeps the compiled code alive
_compiling = threading.Lock()


def _compile_fence() -> Callable[[], None]:
    """Compile the fence once per process (the forkserver does it before forking: `cli/preload`).
    Locked: a second engine replacing the first would free the code a caller is about to run."""
    global _fence, _engine
    with _compiling:
        if _fence is not None:
            return _fence
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        module = llvm.parse_assembly("define void @stc_fence() {\n  fence seq_cst\n  ret void\n}\n")
        machine = llvm.Target.from_default_triple().create_target_machine()
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        _engine = engine
        _fence = ctypes.CFUNCTYPE(None)(engine.get_function_address("stc_fence"))
        return _fence


def fence() -> None:
    """A full memory barrier (``lock or`` on x86-64): no load below passes a store above."""
    (_fence or _compile_fence())()


def futex_wake(address: int) -> None:
    """Wake every process blocked on the 32-bit futex word at `address` (shared memory)."""
    if _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0) < 0:
        code = ctypes.get_errno()
        raise DoorbellError(code, f"FUTEX_WAKE at {address:#x}: {os.strerror(code)}")


def futex_wait_any(words: Sequence[tuple[int, int]], timeout: float) -> None:
    """Block until one of the 32-bit futex words ``(address, expected)`` is woken, or `timeout`
    seconds pass, or a signal arrives. Returns at once when a word no longer holds its expected
    value (the kernel compares atomically with queueing, so a wake between our check and the
    call is never lost)."""
    n = len(words)
    if not 0 < n <= MAX_WAIT_WORDS:
        raise ValueError(f"`words` must hold 1 to {MAX_WAIT_WORDS} futex words, held {n}")
    waiters = (_Waiter * n)()
    for i, (address, expected) in enumerate(words):
        waiters[i].uaddr = address
        waiters[i].val = expected & 0xFFFFFFFF
        waiters[i].flags = _FUTEX2_SIZE_U32
    deadline = time.monotonic_ns() + int(max(timeout, 0.0) * 1e9)  # CLOCK_MONOTONIC, as the kernel's
    until = _Timespec(*divmod(deadline, 1_000_000_000))
    if _syscall(_SYS_FUTEX_WAITV, waiters, n, 0, ctypes.byref(until), _CLOCK_MONOTONIC) < 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            raise DoorbellError(code, f"futex_waitv needs Linux >= 5.16; this kernel is {os.uname().release}")
        if code not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise DoorbellError(code, f"futex_waitv on {n} word(s): {os.strerror(code)}")
