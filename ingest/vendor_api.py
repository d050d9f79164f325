"""What the feed loop gives a vendor session, and what a session gives back.

A vendor session only turns bytes into record batches and manages its connection; the feed
loop (`streamctl.ingest.feed`) owns rings, partitions, heartbeats, counters and reconnects.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["FeedContext", "FeedSession", "EndOfInput", "SessionError", "VendorSpec", "resolve"]


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


@dataclass(frozen=True)
class VendorSpec:
    """The one object a vendor folder exports (as ``SPEC`` in its ``__init__``) to register itself.

    Heavy parts are named as ``"module:attribute"`` references and imported only when used, so
    `streamctl validate` reads a config without loading sockets, decoders or numba kernels.
    """

    name: str
    """The ``feeds[i].vendor`` value."""
    options: type
    """Frozen msgspec Struct of ``feeds[i].options``; may define ``check() -> (field, message,
    value) | None`` for rules a type cannot express."""
    session: str
    """``Session(options, feed, ctx)``, a `FeedSession`."""
    parser: str
    """What turns the vendor's bytes (or, for the simulator, its model) into records."""
    venue: str | None
    """The ``click`` command of ``streamctl venue <name>``: a local server speaking the vendor's
    protocol. None only for vendors with no wire protocol (``reason_without_venue`` says why)."""
    needs_symbols: bool
    """Whether ``feeds[i].symbols`` is required (live vendors subscribe to symbols)."""
    live: bool
    """Live vendors run under the reconnect policy; offline inputs do not reconnect."""
    docs: str
    """The vendor's page, relative to the repository root."""
    warm_up: str | None = None
    """Compiles (or loads from cache) the vendor's kernels in the forkserver before children fork."""
    reason_without_venue: str = ""

    def session_type(self) -> type[FeedSession]:
        return resolve(self.session)

    def venue_command(self) -> Any:
        return resolve(self.venue) if self.venue else None


def resolve(reference: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
