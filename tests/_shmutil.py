"""Helpers shared by the shared-memory tests: unique plant names, leak checks."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from streamctl.shm.segments import PREFIX, SHM_DIR

__all__ = ["unique_plant", "plant_segments", "no_leaks"]

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
