"""The plant's one reconnect policy: when to try a lost connection again.

Live vendor feeds (`streamctl.ingest.reconnect`) and sinks reconnecting to their stores
(`streamctl.sinks`) both wait by this schedule, so a user configures retries one way.
"""

from __future__ import annotations

import random
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["ReconnectPolicy"]


class ReconnectPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When to try a lost live connection again (usable as a config sub-struct)."""

    delays: Annotated[list[Annotated[float, Meta(ge=0)]], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    )
    """Seconds before reconnect attempt 1, 2 ...; later attempts wait `max_delay`."""
    max_delay: Annotated[float, Meta(ge=0)] = 60.0
    """Upper bound of any wait (before jitter), and the wait after the listed `delays`."""
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1
    """Each wait is scaled by a uniform factor in [1 - jitter, 1 + jitter] (0.1 = +-10 %)."""
    max_failures: Annotated[int, Meta(ge=1)] = 10
    """Reconnect attempts that may fail in a row before giving up (FAILED state). An attempt
    fails when it cannot connect, or when its session ends before delivering a record, so a
    gateway that accepts and then drops or starves every connection still ends in FAILED."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError(f"`attempt` must be >= 1, was {attempt}")
        base = self.delays[attempt - 1] if attempt <= len(self.delays) else self.max_delay
        base = min(base, self.max_delay)
        if self.jitter:
            base *= (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return max(base, 0.0)
