"""Bounded idle strategy for a producer waiting for room in a ring (``overflow: block``).

A consumer sleeps on the ring's doorbell (`streamctl.shm.doorbell`); a producer waiting for a
slow consumer to free slots has no bell to sleep on, and should react within microseconds when
room appears yet not burn a core (the plant runs on few cores): spin a little, then yield the
CPU, then sleep with an exponential backoff capped at `max_sleep`. Any progress resets it.
"""

from __future__ import annotations

import os
import time

__all__ = ["IdleStrategy"]


class IdleStrategy:
    """Spin `spins` times, then `os.sched_yield()` `yields` times, then sleep with backoff up to
    `max_sleep`.

    Call ``idle(worked)`` once per loop iteration: `worked` true resets the strategy.
    """

    __slots__ = ("spins", "yields", "min_sleep", "max_sleep", "_count", "_sleep")

    def __init__(
        self, *, spins: int = 50, yields: int = 20, min_sleep: float = 20e-6, max_sleep: float = 1e-3,
    ) -> None:
        if spins < 0 or yields < 0:
            raise ValueError(f"`spins` and `yields` must be >= 0, were {spins} and {yields}")
        if not 0 < min_sleep <= max_sleep:
            raise ValueError(f"need 0 < `min_sleep` <= `max_sleep`, were {min_sleep} and {max_sleep}")
        self.spins = spins
        self.yields = yields
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self._count = 0
        self._sleep = min_sleep

    def reset(self) -> None:
        """Back to spinning (progress was made)."""
        self._count = 0
        self._sleep = self.min_sleep

    def idle(self, worked: bool = False) -> None:
        """One idle step; no wait at all when `worked`."""
        if worked:
            self.reset()
            return
        count = self._count
        self._count = count + 1
        if count < self.spins:
            return
        if count < self.spins + self.yields:
            os.sched_yield()
            return
        time.sleep(self._sleep)
        self._sleep = min(self._sleep * 2, self.max_sleep)

    @property
    def current_sleep(self) -> float:
        """The sleep the next sleeping step would take (seconds)."""
        return self._sleep
