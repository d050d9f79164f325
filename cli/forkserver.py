"""The plant's forkserver, started as soon as a command knows it will run a plant.

Children fork from a forkserver that has imported everything and loaded every kernel
(`streamctl.cli.preload`), so a restart takes well under a second. That preload is the
slowest part of a plant's start (numba and its cached kernels: about a second and a half of
CPU), and the forkserver only starts with the first child. `start` launches it at once and
returns: it preloads on the other core while the command imports the rest, reads its config
and creates the segments; the first child then waits only for what is left.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

__all__ = ["start", "PRELOAD"]

PRELOAD = "streamctl.cli.preload"


def start() -> ForkServerContext:
    """The forkserver context, its server running (or starting) with the plant's preload."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD])
    forkserver.ensure_running()
    return ctx
