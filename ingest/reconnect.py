"""One reconnect policy for every live vendor.

A live vendor session knows how to connect once and raises `SessionError` when the
connection is lost. `ReconnectingSession` wraps a factory of such sessions and owns
everything about trying again: the back-off schedule (1, 2, 4 ... s, capped, with jitter),
the events a user sees (``disconnect``, ``reconnect_failed``, ``reconnect``, ``error``),
the RESET records that make workers clear books built from the lost connection, and the
point where it gives up (`FeedFailed`, which the feed loop turns into FAILED state).

It never blocks the feed loop longer than the ``timeout`` the loop passes to `poll`
(apart from the connect attempt itself, bounded by the vendor's connect timeout).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Annotated

import msgspec
import numpy as np
from msgspec import Meta

from streamctl.bus.wire import EventKind
from streamctl.ingest.vendor_api import FeedContext, FeedSession, SessionError
from streamctl.shm.stats import CounterName

__all__ = ["ReconnectPolicy", "ReconnectingSession", "FeedFailed"]


class FeedFailed(Exception):
    """The feed gave up: retrying cannot help or failed `max_failures` times in a row."""


class ReconnectPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When to try a lost live connection again (usable as a config sub-struct)."""

    delays: Annotated[list[Annotated[float, Meta(ge=0)]], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    )
    """Seconds before the 1st, 2nd ... consecutive attempt; later attempts wait `max_delay`."""
    max_delay: Annotated[float, Meta(ge=0)] = 60.0
    """Upper bound of any wait (before jitter), and the wait after the listed `delays`."""
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1
    """Each wait is scaled by a uniform factor in [1 - jitter, 1 + jitter] (0.1 = +-10 %)."""
    max_failures: Annotated[int, Meta(ge=1)] = 10
    """Consecutive failed attempts before giving up (FAILED state)."""
    healthy_after: Annotated[float, Meta(ge=0)] = 10.0
    """A new session counts as healthy (failure count back to 0) once it has delivered
    records or stayed up this many seconds; one that dies before is a failed attempt, so a
    gateway that accepts and drops every connection still ends in FAILED."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError(f"`attempt` must be >= 1, was {attempt}")
        base = self.delays[attempt - 1] if attempt <= len(self.delays) else self.max_delay
        base = min(base, self.max_delay)
        if self.jitter:
            base *= (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return max(base, 0.0)


class ReconnectingSession:
    """A `FeedSession` that survives disconnects of a live vendor session.

    Parameters
    ----------
    factory
        Builds a fresh, unopened vendor session; each one subscribes everything on `open`.
    policy
        The back-off schedule and give-up rule.
    ctx
        The feed's context (events and counters go there).
    reset_records
        Builds one Kind.RESET record per instrument id, returned first after a reconnect.
    sleep
        How to wait for the next attempt (tests record the waits).
    """

    def __init__(
        self,
        factory: Callable[[], FeedSession],
        policy: ReconnectPolicy,
        ctx: FeedContext,
        *,
        reset_records: Callable[[list[int]], np.ndarray],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._factory = factory
        self._policy = policy
        self._ctx = ctx
        self._reset_records = reset_records
        self._sleep = sleep
        self._session: FeedSession | None = None
        self._instruments: set[int] = set()
        self._failures = 0  # consecutive failed attempts
        self._retry_at: float | None = None  # set while waiting to reconnect
        self._healthy_at: float | None = None  # set while a new session is on probation
        self._failed: str | None = None  # why the policy gave up
        self._pending_reset = False

    # ---- FeedSession face
    def open(self) -> None:
        """Connect the first session. Raises `FeedFailed` only if retrying cannot help."""
        self._attempt(first=True)
        self._check_failed()

    def poll(self, timeout: float) -> np.ndarray | None:
        """Records from the live session, RESET records after a reconnect, or None.

        While waiting for the next attempt it sleeps at most `timeout` and returns None.
        Raises `FeedFailed` once the policy has given up.
        """
        self._check_failed()
        if self._session is None:
            if not self._wait_for_retry(timeout):
                return None
            if not self._attempt(first=False):
                self._check_failed()
                return None
        if self._pending_reset:
            self._pending_reset = False
            ids = sorted(self._instruments)
            if ids:
                return self._reset_records(ids)
        assert self._session is not None
        try:
            batch = self._session.poll(timeout)
        except SessionError as exc:
            self._lost(exc)
            self._check_failed()
            return None
        if self._healthy_at is not None and (
            (batch is not None and len(batch)) or time.monotonic() >= self._healthy_at
        ):
            self._healthy_at = None
            self._failures = 0
        return batch

    def close(self) -> None:
        """Close the live session, if any; safe to call twice."""
        self._drop_session()

    def instruments(self) -> list[int]:
        """Every instrument any of the sessions has produced."""
        if self._session is not None:
            self._instruments.update(self._session.instruments())
        return sorted(self._instruments)

    # ---- state
    @property
    def connected(self) -> bool:
        return self._session is not None

    def _check_failed(self) -> None:
        if self._failed is not None:
            raise FeedFailed(self._failed)

    def _wait_for_retry(self, timeout: float) -> bool:
        """Sleep towards the scheduled attempt (at most `timeout`); True when it is due."""
        assert self._retry_at is not None
        remaining = self._retry_at - time.monotonic()
        if remaining > timeout:
            self._sleep(max(timeout, 0.0))
            return False
        if remaining > 0:
            self._sleep(remaining)
        return True

    def _attempt(self, *, first: bool) -> bool:
        """One connect attempt; True on success."""
        session = self._factory()
        try:
            session.open()
        except SessionError as exc:
            _close_quietly(session)
            if not exc.retry:
                self._give_up(f"{'connect' if first else 'reconnect'} refused: {exc}", exc.code)
            elif not self._failed_attempt(exc):
                self._schedule(f"connect failed: {exc}", kind=EventKind.RECONNECT_FAILED)
            return False
        self._session = session
        self._retry_at = None
        self._healthy_at = time.monotonic() + self._policy.healthy_after
        if not first:
            self._ctx.event(EventKind.RECONNECT, f"reconnected after {self._failures} failed attempt(s)")
            self._pending_reset = True
        return True

    def _lost(self, exc: SessionError) -> None:
        """The live session failed in poll: close it and schedule a reconnect."""
        self._drop_session()
        if not exc.retry:
            self._give_up(f"session failed: {exc}", exc.code)
            return
        if self._healthy_at is not None:  # it died on probation: that attempt failed too
            self._healthy_at = None
            if self._failed_attempt(exc):
                return
        self._schedule(f"connection lost: {exc}", kind=EventKind.DISCONNECT)

    def _schedule(self, why: str, *, kind: EventKind) -> None:
        attempt = self._failures + 1
        wait = self._policy.delay(attempt)
        self._retry_at = time.monotonic() + wait
        self._ctx.event(
            kind, f"{why}; retrying in {wait:.3g} s (attempt {attempt} of {self._policy.max_failures})"
        )

    def _failed_attempt(self, exc: SessionError) -> bool:
        """Count a failed attempt; True when it was the last one the policy allows (given up)."""
        self._failures += 1
        if self._failures < self._policy.max_failures:
            return False
        self._give_up(f"gave up after {self._failures} failed attempts; last error: {exc}", exc.code)
        return True

    def _give_up(self, why: str, code: int | None) -> None:
        self._failed = why
        self._ctx.count(CounterName.ERRORS)
        self._ctx.event(EventKind.ERROR, why, code=code)

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._instruments.update(session.instruments())
            _close_quietly(session)


def _close_quietly(session: FeedSession) -> None:
    try:
        session.close()
    except Exception:  # noqa: BLE001 - a failing close must not hide why the session went
        pass
