"""Bounded idle strategy for loops that poll shared memory.

A consumer polling several rings, or a producer waiting for room, should react within
microseconds when work is there but not burn a core (the plant runs on few cores) when
it is not: spin a little, then yield the CPU, then sleep with an exponential backoff
capped at `max_sleep`. Any work resets it. Optionally, after a longer quiet spell
(`deep_after` seconds asleep) the cap rises to `deep_sleep`: each wake-up of a polling loop
costs tens of microseconds of Python, so a loop that wakes every 100 us burns ~10 % of a
core doing nothing, while under load (work every few milliseconds at most) it never gets
that far and keeps the short cap.
"""

from __future__ import annotations

import os
import time

__all__ = ["IdleStrategy"]


class IdleStrategy:
    """Spin `spins` times, then `os.sched_yield()` `yields` times, then sleep with backoff up to
    `max_sleep`, and up to `deep_sleep` once the sleeps since the last work add up to `deep_after`.

    Call ``idle(worked)`` once per loop iteration: `worked` true resets the strategy.
    """

    __slots__ = ("spins", "yields", "min_sleep", "max_sleep", "deep_sleep", "deep_after", "_count", "_sleep",
                 "_slept")

    def __init__(
        self, *, spins: int = 50, yields: int = 20, min_sleep: float = 20e-6, max_sleep: float = 1e-3,
        deep_sleep: float | None = None, deep_after: float = 0.05,
    ) -> None:
        if spins < 0 or yields < 0:
            raise ValueError(f"`spins` and `yields` must be >= 0, were {spins} and {yields}")
        if not 0 < min_sleep <= max_sleep:
            raise ValueError(f"need 0 < `min_sleep` <= `max_sleep`, were {min_sleep} and {max_sleep}")
        if deep_sleep is not None and deep_sleep < max_sleep:
            raise ValueError(f"`deep_sleep` must be >= `max_sleep` ({max_sleep}), was {deep_sleep}")
        if not deep_after > 0:
            raise ValueError(f"`deep_after` must be > 0, was {deep_after}")
        self.spins = spins
        self.yields = yields
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.deep_sleep = max_sleep if deep_sleep is None else deep_sleep
        self.deep_after = deep_after
        self._count = 0
        self._sleep = min_sleep
        self._slept = 0.0
        """Sleep asked for since the last work (no clock read: the real wait is never shorter)."""

    def reset(self) -> None:
        """Back to spinning (work was found)."""
        self._count = 0
        self._sleep = self.min_sleep
        self._slept = 0.0

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
        self._slept += self._sleep
        cap = self.deep_sleep if self._slept >= self.deep_after else self.max_sleep
        self._sleep = min(self._sleep * 2, cap)

    @property
    def current_sleep(self) -> float:
        """The sleep the next sleeping step would take (seconds)."""
        return self._sleep
