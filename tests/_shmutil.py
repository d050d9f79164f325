"""Helpers shared by the shared-memory tests: unique plant names, leak checks, bounded waits."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamctl.shm.segments import PREFIX, SHM_DIR

__all__ = ["unique_plant", "plant_segments", "no_leaks", "wait_for"]

_counter = itertools.count()


def unique_plant(tag: str = "t") -> str:
    """A plant name no other test (or helper running tests at the same time) uses."""
    return f"{tag}{os.getpid()}x{next(_counter)}"[:24]


def plant_segments(plant: str) -> list[str]:
    """Names in /dev/shm that belong to `plant` (by name; a plant name is unique per test)."""
    prefix = f"{PREFIX}{plant}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


@contextmanager
def no_leaks(plant: str) -> Iterator[str]:
    """Yield `plant`; afterwards remove anything of it left in /dev/shm and fail if there was."""
    failed = False
    try:
        yield plant
    except BaseException:
        failed = True
        raise
    finally:
        left = plant_segments(plant)
        for name in left:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass
        if left and not failed:
            raise AssertionError(f"segments left in {SHM_DIR}: {left}")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
