"""The API's message pacing: at most N messages in any one-second window (TWS allows 50)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """A sliding one-second window of send times; `wait` says how long until one more may go."""

    def __init__(self, rate: int, *, window: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if rate < 1:
            raise ValueError(f"`rate` must be >= 1, was {rate}")
        self.rate = rate
        self.window = window
        self._clock = clock
        self._sent: deque[float] = deque()

    def wait(self) -> float:
        """Seconds until the next message may be sent (0.0: now)."""
        now = self._clock()
        sent = self._sent
        while sent and now - sent[0] >= self.window:
            sent.popleft()
        return 0.0 if len(sent) < self.rate else sent[0] + self.window - now

    def sent(self) -> None:
        """One message went out now."""
        self._sent.append(self._clock())
