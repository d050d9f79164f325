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

__all__ = ["start", "PRELOAD", "WARM_VENDORS", "WARM_LIVE"]

PRELOAD = "streamctl.cli.preload"
_EXIT = "streamctl.cli.forkserver_exit"
"""Imported after the preload: the forkserver leaves without the interpreter's teardown."""
WARM_VENDORS = "STREAMCTL_WARM_VENDORS"
"""Environment of the forkserver: the vendors (comma-separated) whose kernels the preload loads;
every registered vendor's when unset."""
WARM_LIVE = "STREAMCTL_WARM_LIVE"
"""Environment of the forkserver: ``0`` when it serves a plant that is not live (`streamctl
replay`): the kernels only a live plant runs (the input journal, the latency histogram, the
recovery service's receiver) are not loaded."""


def start(*, vendors: Iterable[str] | None = None, live: bool = True) -> ForkServerContext:
    """The forkserver context, its server running (or starting) with the plant's preload.

    `vendors`: load only these vendors' kernels (`streamctl replay` knows its one vendor before
    it reads anything); None loads every vendor's. A feed of any other vendor loads its own
    kernels before it reports ready. `live`: False for a plant that is not live (a replay),
    whose children never run the live-only kernels (`WARM_LIVE`). No effect on a forkserver
    already running.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD, _EXIT])
    told = {WARM_VENDORS: None if vendors is None else ",".join(vendors), WARM_LIVE: None if live else "0"}
    previous = {name: os.environ.get(name) for name in told}
    os.environ.update({name: value for name, value in told.items() if value is not None})
    try:
        forkserver.ensure_running()
    finally:  # only the forkserver's environment carries them
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return ctx
