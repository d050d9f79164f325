"""One reconnect policy for every live vendor (the policy itself, `ReconnectPolicy`, is in
`streamctl.bus.retry`, so sinks reconnecting to their stores use the same one).

A live vendor session knows how to connect once and raises `SessionError` when the
connection is lost. `ReconnectingSession` wraps a factory of such sessions and owns
everything about trying again: the back-off schedule (1, 2, 4 ... s, capped, with jitter),
the events a user sees (``disconnect``, ``reconnect_failed``, ``reconnect``, ``error``),
the RESET records that make workers clear books built from the lost connection, and the
point where it gives up (`FeedFailed`, which the feed loop turns into FAILED state).

The attempt in progress is reported through `track` whenever it changes, so the feed can show
it in `status` and keep it in its process-table slot: a feed process restarted mid-attempt
resumes the count instead of starting again from zero.

It never blocks the feed loop longer than the ``timeout`` the loop passes to `poll`
(apart from the connect attempt itself, bounded by the vendor's connect timeout, during
which the vendor session keeps the feed's heartbeat going through `FeedContext.heartbeat`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from streamctl.bus.retry import ReconnectPolicy
from streamctl.bus.wire import EventKind
from streamctl.ingest.vendor_api import FeedContext, FeedSession, SessionError
from streamctl.shm.stats import CounterName

__all__ = ["ReconnectingSession", "FeedFailed", "AttemptTracker"]

AttemptTracker = Callable[[int, str], None]
"""Told the reconnect attempt in progress (0 = none: the session is healthy) and a line saying
where it stands, whenever the attempt changes."""


class FeedFailed(Exception):
    """The feed gave up: retrying cannot help or `max_failures` reconnect attempts failed in a row."""


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
    attempt
        The attempt an earlier process of this feed had in progress when it died (0 = none):
        that attempt counts as failed, and `open` goes on with the next one.
    track
        Told every change of the attempt in progress (see `AttemptTracker`).
    """

    def __init__(
        self,
        factory: Callable[[], FeedSession],
        policy: ReconnectPolicy,
        ctx: FeedContext,
        *,
        reset_records: Callable[[list[int]], np.ndarray],
        sleep: Callable[[float], None] = time.sleep,
        attempt: int = 0,
        track: AttemptTracker | None = None,
    ) -> None:
        self._factory = factory
        self._policy = policy
        self._ctx = ctx
        self._reset_records = reset_records
        self._sleep = sleep
        self._track = track
        self._session: FeedSession | None = None
        self._instruments: set[int] = set()
        self._attempt = attempt  # reconnect attempt in progress since the last healthy session
        self._retry_at: float | None = None  # set while waiting to reconnect
        self._failed: str | None = None  # why the policy gave up
        self._pending_reset = False

    # ---- FeedSession face
    def open(self) -> None:
        """Connect the first session (after a restart mid-attempt: schedule the next attempt).

        Raises `FeedFailed` only if retrying cannot help or the restarted attempt was the last.
        """
        if self._attempt:  # the next attempt is scheduled as usual; `poll` makes it
            died = SessionError(f"the feed process restarted during reconnect attempt {self._attempt}")
            self._attempt_failed(died, why="connect failed", kind=EventKind.RECONNECT_FAILED)
        else:
            self._connect()
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
            if not self._connect():
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
        if self._attempt and batch is not None and len(batch):  # the first record: healthy again
            self._set_attempt(0, "")
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

    @property
    def attempt(self) -> int:
        """The reconnect attempt in progress (0 = the session is healthy, or the first one)."""
        return self._attempt

    def _check_failed(self) -> None:
        if self._failed is not None:
            raise FeedFailed(self._failed)

    def _wait_for_retry(self, timeout: float) -> bool:
        """Sleep towards the scheduled attempt (at most `timeout`); True when it is due."""
        if self._retry_at is None:
            return True
        remaining = self._retry_at - time.monotonic()
        if remaining > timeout:
            self._sleep(max(timeout, 0.0))
            return False
        if remaining > 0:
            self._sleep(remaining)
        return True

    def _connect(self) -> bool:
        """One connect attempt (the first session's when no attempt is in progress); True on success."""
        session = self._factory()
        try:
            session.open()
        except SessionError as exc:
            _close_quietly(session)
            if not exc.retry:
                self._give_up(f"{'reconnect' if self._attempt else 'connect'} refused: {exc}", exc.code)
            else:
                self._attempt_failed(exc, why="connect failed", kind=EventKind.RECONNECT_FAILED)
            return False
        self._session = session
        self._retry_at = None
        if self._attempt:
            n, of = self._attempt, self._policy.max_failures
            self._ctx.event(EventKind.RECONNECT, f"reconnected on attempt {n} of {of}")
            self._set_attempt(n, f"reconnected on attempt {n} of {of}; waiting for the first record")
            # A session that resumed where the last one stopped lost nothing: books stay valid.
            self._pending_reset = not getattr(session, "resumed", False)
        return True

    def _lost(self, exc: SessionError) -> None:
        """The live session failed in poll: close it and schedule a reconnect."""
        self._drop_session()
        if not exc.retry:
            self._give_up(f"session failed: {exc}", exc.code)
            return
        self._attempt_failed(exc, why="connection lost", kind=EventKind.DISCONNECT)

    def _attempt_failed(self, exc: SessionError, *, why: str, kind: EventKind) -> bool:
        """The attempt in progress failed (or a session ended): schedule the next attempt, or
        give up when it was the last one the policy allows. True when given up."""
        if self._attempt >= self._policy.max_failures:
            self._give_up(f"gave up after {self._attempt} failed attempts; last error: {exc}", exc.code)
            return True
        attempt = self._attempt + 1
        wait = self._policy.delay(attempt)
        self._retry_at = time.monotonic() + wait
        where = f"retrying in {wait:.3g} s (attempt {attempt} of {self._policy.max_failures})"
        self._ctx.event(kind, f"{why}: {exc}; {where}")
        self._set_attempt(attempt, f"{where}; {why}: {exc}")
        return False

    def _set_attempt(self, attempt: int, detail: str) -> None:
        self._attempt = attempt
        if self._track is not None:
            self._track(attempt, detail)

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
