"""The libzmq pyzmq loaded, the addresses of its C functions, and how compiled code calls them.

numba caches machine code, and cached code cannot hold an address of one process: the
compiled loops (`native_send`, `native_recv`) take these addresses as an argument instead, and
call them through `c_function`'s intrinsics.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["library", "addresses", "c_function"]

_C_TYPES = {"int": ir.IntType(32), "size": ir.IntType(64), "ptr": ir.IntType(8).as_pointer()}


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


def _from_int64(builder: ir.IRBuilder, value: ir.Value, kind: str) -> ir.Value:
    if kind == "int":
        return builder.trunc(value, _C_TYPES["int"])
    return builder.inttoptr(value, _C_TYPES["ptr"]) if kind == "ptr" else value


def _to_int64(builder: ir.IRBuilder, value: ir.Value, kind: str) -> ir.Value:
    if kind == "int":
        return builder.sext(value, _C_TYPES["size"])
    return builder.ptrtoint(value, _C_TYPES["size"]) if kind == "ptr" else value


def c_function(result: str, *params: str) -> Any:
    """An intrinsic for compiled code: ``call(address, *args)`` calls the C function at `address`
    whose result and up to four parameters are each a C ``int``, ``size_t`` or pointer (``"int"``,
    ``"size"``, ``"ptr"``); the arguments and the result are int64 on numba's side (pointers as
    addresses)."""

    def typed(function, *args):
        def codegen(context, builder, signature, values):
            address, *ints = (context.cast(builder, value, ty, types.int64)
                              for value, ty in zip(values, signature.args, strict=True))
            fnty = ir.FunctionType(_C_TYPES[result], [_C_TYPES[kind] for kind in params])
            called = builder.call(builder.inttoptr(address, fnty.as_pointer()),
                                  [_from_int64(builder, value, kind) for value, kind in zip(ints, params, strict=True)])
            return _to_int64(builder, called, result)

        return types.int64(function, *args), codegen

    # numba reads an intrinsic's parameters from its typing function: one per arity.
    typers = [lambda typingctx, function: typed(function),
              lambda typingctx, function, a: typed(function, a),
              lambda typingctx, function, a, b: typed(function, a, b),
              lambda typingctx, function, a, b, c: typed(function, a, b, c),
              lambda typingctx, function, a, b, c, d: typed(function, a, b, c, d)]
    typer = typers[len(params)]
    typer.__name__ = "_".join(("c", result, *params))
    return intrinsic(typer)
