"""What the feed loop gives a vendor session, and what a session gives back.

A vendor session only turns bytes into record batches and manages its connection; the feed
loop (`streamctl.ingest.feed`) owns rings, partitions, heartbeats, counters and reconnects.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["FeedContext", "FeedSession", "EndOfInput", "SessionError"]


class EndOfInput(Exception):
    """The input is exhausted (a replayed file ended): the feed finishes cleanly."""


class SessionError(ConnectionError):
    """The session failed (disconnect, auth refused, liveness timeout).

    ``retry=False`` means trying again cannot help (bad credentials, unsupported data);
    the feed then stops retrying and is marked failed.
    """

    def __init__(self, message: str, *, retry: bool = True, code: int | None = None):
        super().__init__(message)
        self.retry = retry
        self.code = code


class FeedContext(Protocol):
    """Services the feed loop offers a session."""

    feed_name: str

    def instrument_id(self, symbol: str) -> int:
        """Stable id of `symbol` in this feed's symbol registry (registered on first use)."""

    def count(self, cause: str, n: int = 1) -> None:
        """Add to a named drop/health counter: ``malformed``, ``gaps``, ``errors``, ``system``..."""

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        """Publish ``event.<feed>`` (``reconnect``, ``error``, ``system``...) and log it once."""

    def progress(self, done: float, total: float) -> None:
        """Report input progress (bytes or records) for `status` (replay)."""


class FeedSession(Protocol):
    """The face of every vendor's ``Session(options, feed, ctx)``."""

    def open(self) -> None:
        """Connect, authenticate, subscribe. Raise `SessionError` on failure."""

    def poll(self, timeout: float) -> np.ndarray | None:
        """The next batch of records (``RECORD_DTYPE``), or None if none arrived within
        `timeout` seconds. Raise `EndOfInput` when the input is done, `SessionError` on a
        disconnect. Records carry instrument ids from ``ctx.instrument_id``."""

    def close(self) -> None:
        """Release the connection or file; safe to call twice."""

    def instruments(self) -> list[int]:
        """Instrument ids this session has produced (reset records go to these on reconnect)."""
