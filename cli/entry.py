"""The `streamctl` entry point: `replay` starts its forkserver before anything else is imported,
and leaves without the interpreter's teardown.

The forkserver's preload (numba and the cached kernels) is the longest part of a replay's
start-up, and it runs on the other core while this process gets ready; importing click and the
command line first delayed it by about 0.05 s. This module imports nothing else when loaded:
plant children run the entry script again as ``__mp_main__`` (multiprocessing's spawn
preparation), so with the console script each child paid the command line's imports
(about 0.02 s each, one after the other on the start-up path) before it could start.

numpy's OpenBLAS starts a pool of worker threads when numpy is imported, and they spin for
a while: 0.04-0.12 s of CPU in every process that imports numpy (the command and the
forkserver), taken from the preload on a 2-core machine. Nothing in streamctl calls BLAS, so
`main` asks for one thread unless the user chose a number (the children inherit it).

A replay has written and closed its output when the command returns; tearing down an
interpreter holding numpy, msgspec, ZeroMQ and the plant's modules then took about 0.05 s more.
The ``atexit`` handlers still run (logging's flush among them), then the process exits at once.
"""

from __future__ import annotations

import atexit
import os
import sys

__all__ = ["main", "exit_at_once"]


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before anything imports numpy
    args = sys.argv[1:] if argv is None else argv
    replay = args[:1] == ["replay"] and not {"--help", "-h"} & set(args)
    code: list[object] = [1]  # what the process exits with: an uncaught exception's 1 until SystemExit says
    if replay and argv is None:  # the process's own command line: it ends here
        atexit.register(_exit_now, code)  # registered first, so it runs after every other handler
    if replay:
        from streamctl.cli import forkserver

        forkserver.start(vendors=["replay"], live=False)  # `replay` starts it again: a no-op once running
    from streamctl.cli.main import main as run

    try:
        run(argv)
    except SystemExit as exc:
        code[0] = exc.code
        raise


def _exit_now(code: list[object]) -> None:
    exit_at_once(code[0])


def exit_at_once(status: object = 0) -> None:
    """Flush stdout and stderr, then end the process with `status` (a `SystemExit` code: an int,
    None for 0, anything else 1) without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced
            pass
    os._exit(status if isinstance(status, int) else 0 if status is None else 1)
