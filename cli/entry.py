"""The `streamctl` entry point: `replay` starts its forkserver before anything else is imported.

The forkserver's preload (numba and the cached kernels) is the longest part of a replay's
start-up, and it runs on the other core while this process gets ready; importing click and the
command line first delayed it by about 0.05 s. This module imports nothing else when loaded:
plant children run the entry script again as ``__mp_main__`` (multiprocessing's spawn
preparation), so with the console script each child paid the command line's imports
(about 0.02 s each, one after the other on the start-up path) before it could start.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["replay"] and not {"--help", "-h"} & set(args):
        from streamctl.cli import forkserver

        forkserver.start(vendors=["replay"])  # `replay` starts it again: a no-op once running
    from streamctl.cli.main import main as run

    run(argv)
