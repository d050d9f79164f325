"""The plant's forkserver, started as soon as a command knows it will run a plant.

Children fork from a forkserver that has imported everything and loaded the kernels
(`streamctl.cli.preload`), so a restart takes well under a second. That preload is the
slowest part of a plant's start (numba and its cached kernels: about a second and a half of
CPU), and the forkserver only starts with the first child. `start` launches it at once and
returns: it preloads on the other core while the command imports the rest, reads its config
and creates the segments; the first child then waits only for what is left.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

__all__ = ["start", "PRELOAD", "WARM_VENDORS"]

PRELOAD = "streamctl.cli.preload"
_EXIT = "streamctl.cli.forkserver_exit"
"""Imported after the preload: the forkserver leaves without the interpreter's teardown."""
WARM_VENDORS = "STREAMCTL_WARM_VENDORS"
"""Environment of the forkserver: the vendors (comma-separated) whose kernels the preload loads;
every registered vendor's when unset."""


def start(*, vendors: Iterable[str] | None = None) -> ForkServerContext:
    """The forkserver context, its server running (or starting) with the plant's preload.

    `vendors`: load only these vendors' kernels (`streamctl replay` knows its one vendor before
    it reads anything); None loads every vendor's. A feed of any other vendor loads its own
    kernels before it reports ready. No effect on a forkserver already running.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD, _EXIT])
    previous = os.environ.get(WARM_VENDORS)
    if vendors is not None:
        os.environ[WARM_VENDORS] = ",".join(vendors)
    try:
        forkserver.ensure_running()
    finally:  # only the forkserver's environment carries it
        if previous is None:
            os.environ.pop(WARM_VENDORS, None)
        else:
            os.environ[WARM_VENDORS] = previous
    return ctx
