"""Imported by the plant's forkserver only, after its preload: the forkserver's exit skips the
interpreter's teardown.

The forkserver ends when the command that started it has exited (its "alive" pipe closes).
Tearing down an interpreter holding numba, llvmlite, numpy and every plant module then takes
0.1-0.4 s, and all that time the forkserver still holds the command's stdout and stderr, so
whoever reads them (a pipe, `subprocess.run(capture_output=True)`, CI) waits for it. It has
nothing to flush but those streams, and its children never run ``atexit`` handlers (they leave
through ``os._exit``), so this one ends the process at once.
"""

from __future__ import annotations

import atexit

from streamctl.cli.entry import exit_at_once

__all__: list[str] = []

atexit.register(exit_at_once)  # registered last, so run first
