"""The libzmq pyzmq loaded, and the addresses of its C functions, for compiled code.

numba caches machine code, and cached code cannot hold an address of one process: the
compiled loops (`native_send`, `native_recv`) take these addresses as an argument instead.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["library", "addresses"]


@cache
def library() -> ctypes.CDLL:
    """The libzmq pyzmq loaded (bundled beside it, or the system's): found by the mappings of
    this process, so it is the same library, whichever that is."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    candidates = sorted(p for p in paths if Path(p).name.startswith("libzmq"))
    candidates += sorted(p for p in paths if "zmq" in Path(p).name and p not in candidates)  # linked statically
    for path in candidates:
        try:
            found = ctypes.CDLL(path)
            if hasattr(found, "zmq_send") and hasattr(found, "zmq_errno"):
                return found
        except OSError:
            continue
    raise RuntimeError("libzmq, which pyzmq loaded, was not found among this process's mappings")


def addresses(*names: str) -> np.ndarray:
    """The addresses of libzmq's functions `names`, in that order, as compiled code takes them."""
    found = library()
    return np.array([ctypes.cast(getattr(found, name), ctypes.c_void_p).value for name in names], dtype=np.int64)
