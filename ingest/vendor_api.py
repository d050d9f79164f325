"""What the feed loop gives a vendor session, and what a session gives back.

A vendor session only turns bytes into record batches and manages its connection; the feed
loop (`streamctl.ingest.feed`) owns rings, partitions, heartbeats, counters and reconnects.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import numpy as np
from msgspec import Meta

from streamctl.bus.wire import EventKind
from streamctl.shm.stats import CounterName

if TYPE_CHECKING:
    from streamctl.ingest.resume import ResumePoint

__all__ = [
    "FeedContext",
    "FeedSession",
    "FeedConfig",
    "FEED_NAME",
    "SessionFactory",
    "FEED_COUNTERS",
    "Liveness",
    "EndOfInput",
    "SessionError",
    "VendorSpec",
    "resolve",
    "feed_symbols",
]

FEED_COUNTERS = frozenset({
    CounterName.MALFORMED,
    CounterName.GAPS,
    CounterName.ERRORS,
    CounterName.LATE,
    CounterName.OVERFLOW,
    CounterName.RECONNECTS,
    CounterName.DUPLICATES,
})
"""The counters a feed adds to through `FeedContext.count` (the loop owns records_in/out)."""


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


FEED_NAME = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,23}$")]
"""A feed's (or plant's) name: it names segments and processes."""


class FeedConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One ``feeds[i]`` entry of the plant config: one ingest process. Owned here, with the feed
    loop that reads it; `streamctl.cli.config` composes it into the plant config."""

    name: FEED_NAME
    vendor: str
    """One of the registered vendors (``streamctl.ingest.vendors.VENDORS``)."""
    symbols: Annotated[list[str], Meta(min_length=1)] | None = None
    """Symbols to subscribe (required by live vendors; replay can read them from its files)."""
    cpu: Annotated[int, Meta(ge=0)] | None = None
    """Core to pin the process to; ``null`` spreads processes over the cores."""
    options: dict[str, Any] = {}
    """Vendor options, validated by the vendor's own options type (``feeds[i].options``)."""
    allow_non_positive_prices: bool = False
    """Trade and book prices at or below zero are real for this feed (calendar spreads, some
    commodity futures); otherwise such a record is refused as malformed."""


class FeedContext(Protocol):
    """Services the feed loop offers a session."""

    feed_name: str

    def instrument_id(self, symbol: str) -> int:
        """Stable id of `symbol` in this feed's symbol registry (registered on first use), or
        `NO_INSTRUMENT` (0) for a symbol no topic can carry: its records are then dropped and
        counted as malformed by the feed loop, and the feed goes on."""

    def count(self, cause: CounterName, n: int = 1) -> None:
        """Add `n` to one of `FEED_COUNTERS` (``malformed``, ``gaps``, ``errors``...).

        Any other name raises ValueError naming it: a drop is never counted as something else.
        """

    def event(self, kind: EventKind, message: str, *, code: int | None = None) -> None:
        """Publish ``event.<feed>`` and log it once; an unknown `kind` raises ValueError."""

    def progress(self, done: float, total: float) -> None:
        """Report input progress (bytes or records) for `status` (replay)."""

    def resume_point(self) -> ResumePoint | None:
        """The latest event time the feed's rings hold and the records at it (None: nothing
        delivered yet), for a vendor that can replay from an event time."""

    def heartbeat(self) -> None:
        """Tell the supervisor the feed is alive. A session that blocks for more than a moment
        (connecting, waiting for the gateway's control lines) calls it at least every second."""


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


SessionFactory = Callable[[Any, FeedConfig, FeedContext], FeedSession]
"""A vendor's ``Session(options, feed, ctx)``: its options struct, the feed's settings, the context."""


class Liveness:
    """The one silence rule of live sessions: a connection that has delivered nothing (data
    or heartbeat) for `limit` seconds is dead.

    A session calls `heard` whenever bytes arrive, blocks at most `wait(timeout)` seconds, and
    raises `SessionError` once `expired` says so.
    """

    def __init__(self, limit: float, *, clock: Callable[[], float] = time.monotonic):
        if limit <= 0:
            raise ValueError(f"`limit` must be > 0, was {limit}")
        self.limit = limit
        self._clock = clock
        self._last_heard = clock()

    def heard(self) -> None:
        """Something arrived: the silence starts over."""
        self._last_heard = self._clock()

    def wait(self, timeout: float) -> float:
        """How long a poll may block: `timeout`, cut short at the silence limit (never < 0)."""
        return max(0.0, min(timeout, self._last_heard + self.limit - self._clock()))

    def expired(self) -> bool:
        """Whether the connection has been silent for `limit` seconds or more."""
        return self._clock() - self._last_heard >= self.limit


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
    value) | None`` for rules a type cannot express, and ``event_time_is_now() -> bool`` when
    its answer differs from `live` (the simulator's wall clock; a live vendor's delayed feed)."""
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

    def event_time_is_now(self, options: Any) -> bool:
        """Whether a feed with these options stamps events with the current time, so its quiet
        spells advance its clock (docs/calculators.md, "Bar timing"); a replay's time is its file's.
        The options' own answer wins (a live vendor's delayed feed is not now)."""
        own = getattr(options, "event_time_is_now", None)
        return own() if own is not None else self.live

    def session_type(self) -> SessionFactory:
        return resolve(self.session)

    def venue_command(self) -> Any:
        return resolve(self.venue) if self.venue else None


def feed_symbols(feed: Any, vendor: str) -> list[str]:
    """The symbols a live session subscribes (``feeds[i].symbols``); none is a ValueError naming `vendor`."""
    symbols = list(getattr(feed, "symbols", None) or [])
    if not symbols:
        raise ValueError(f"`symbols` must list at least one symbol for {vendor} feed")
    return symbols


def resolve(reference: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
