"""The API's message pacing: TWS disconnects a client sending more than 50 messages a second."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Spaces messages at least ``1 / rate`` s apart.

    Even spacing, rather than a burst of `rate` at the start of each second, keeps any one-second
    window the gateway measures (on arrival, however its reads bunch them) near `rate`.
    """

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic):
        if rate < 1:
            raise ValueError(f"`rate` must be >= 1, was {rate}")
        self.rate = rate
        self._gap = 1.0 / rate
        self._clock = clock
        self._next = clock()

    def wait(self) -> float:
        """Seconds until the next message may be sent (0.0: now)."""
        return max(0.0, self._next - self._clock())

    def sent(self) -> None:
        """One message went out now. A send late by less than one gap keeps the schedule (no drift
        from coarse polling); a later one starts it again from now (no burst of saved-up sends)."""
        now = self._clock()
        self._next = (self._next if now - self._next < self._gap else now) + self._gap
