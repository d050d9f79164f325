"""The one reconnect policy, driven through the real Databento session and local gateway, and the
context (counters, events, liveness) it and every vendor session report through."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import msgspec
import numpy as np
import pytest
from _common import free_port
from _data import sample
from _databento import ESU4_TRADES, KEY, Ctx, HostileGateway, feed, options, poll_batches

from streamctl.bus.retry import ReconnectPolicy
from streamctl.bus.wire import EventKind
from streamctl.ingest.feed import FeedRuntime, FeedSpec
from streamctl.ingest.reconnect import FeedFailed, ReconnectingSession
from streamctl.ingest.vendor_api import Liveness, SessionError
from streamctl.ingest.vendors.databento.session import Session
from streamctl.shm.records import Kind
from streamctl.shm.stats import CounterName

FAST = dict(delays=[0.01, 0.02, 0.04], max_delay=0.05, jitter=0.0)


# ---------------------------------------------------------------------------------------------- policy


def test_default_schedule_doubles_then_caps_at_60_s():
    policy = ReconnectPolicy(jitter=0)
    assert [policy.delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert policy.max_failures == 10


def test_jitter_stays_within_ten_percent():
    policy = ReconnectPolicy()
    rng = random.Random(7)
    waits = [policy.delay(3, rng) for _ in range(2000)]
    assert 3.6 <= min(waits) < 3.7 and 4.3 < max(waits) <= 4.4


def test_delays_are_capped_by_max_delay():
    assert ReconnectPolicy(delays=[5, 500], max_delay=20, jitter=0).delay(2) == 20
    with pytest.raises(ValueError, match="`attempt` must be >= 1, was 0"):
        ReconnectPolicy().delay(0)


def test_policy_is_a_config_struct():
    policy = msgspec.convert({"delays": [0.5, 1], "max_failures": 3}, ReconnectPolicy)
    assert policy.delays == [0.5, 1] and policy.max_failures == 3
    with pytest.raises(msgspec.ValidationError, match=r"max_failures"):
        msgspec.convert({"max_failures": 0}, ReconnectPolicy)
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `tries`"):
        msgspec.convert({"tries": 3}, ReconnectPolicy)
    opt = options(1, reconnect={"delays": [0.1], "jitter": 0})
    assert opt.reconnect.delays == [0.1]


# ---------------------------------------------------------------------------------------------- context


class _Slot:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, field: str, n: int = 1) -> None:
        self.counts[field] += n


def _runtime() -> tuple[FeedRuntime, _Slot]:
    spec = FeedSpec(plant="t", name="db", slot=0, feed=feed("ESU4"), partitions=1, rings=[], registry="",
                    stats="", events_endpoint="")
    slot = _Slot()
    return FeedRuntime(spec, registry=None, rings=[], slot=slot, publisher=None), slot


def test_feed_context_counts_named_counters_and_refuses_others():
    runtime, slot = _runtime()
    runtime.count(CounterName.MALFORMED, 2)
    runtime.count("gaps")  # a vendor's plain string names the same counter
    runtime.event(EventKind.RECONNECT, "back")
    runtime.event("reconnect", "back again")
    assert slot.counts == {"malformed": 2, "gaps": 1, "reconnects": 2}
    with pytest.raises(ValueError, match="`cause` must be one of .*; was 'malformd'"):
        runtime.count("malformd")
    with pytest.raises(ValueError, match="`cause` must be one of .*; was 'records_in'"):
        runtime.count(CounterName.RECORDS_IN)  # the loop's own counter, not a vendor's
    with pytest.raises(ValueError, match="`kind` must be one of .*; was 'reconect'"):
        runtime.event("reconect", "typo")
    assert slot.counts == {"malformed": 2, "gaps": 1, "reconnects": 2}


def test_liveness_waits_at_most_until_the_silence_limit():
    now = [100.0]
    liveness = Liveness(5.0, clock=lambda: now[0])
    assert liveness.wait(1.0) == 1.0 and not liveness.expired()
    now[0] += 4.5
    assert liveness.wait(1.0) == pytest.approx(0.5) and not liveness.expired()
    now[0] += 0.5
    assert liveness.wait(1.0) == 0.0 and liveness.expired()
    liveness.heard()
    assert liveness.wait(10.0) == 5.0 and not liveness.expired()
    with pytest.raises(ValueError, match="`limit` must be > 0, was 0"):
        Liveness(0)


# ---------------------------------------------------------------------------------------------- live


class Counting:
    """A factory of real Databento sessions that counts how many it built."""

    def __init__(self, port: int, ctx: Ctx, **overrides):
        self.opt = options(port, **overrides)
        self.ctx = ctx
        self.made = 0

    def __call__(self) -> Session:
        self.made += 1
        return Session(self.opt, feed("ESU4"), self.ctx)


def reconnecting(factory: Counting, ctx: Ctx, **policy) -> ReconnectingSession:
    return ReconnectingSession(factory, ReconnectPolicy(**(FAST | policy)), ctx, reset_records=ctx.reset_records)


def poll_until(session: ReconnectingSession, until, *, timeout: float = 15.0) -> list[np.ndarray]:
    return poll_batches(session, until, timeout=timeout, poll=0.02)


def test_gateway_restart_mid_stream(venues):
    path = sample(ESU4_TRADES)
    first = venues.start([path], speed=100.0)  # ~2.3 s for the file: stopped mid-stream
    ctx = Ctx()
    factory = Counting(first.port, ctx)
    session = reconnecting(factory, ctx, max_failures=1000)
    session.open()
    try:
        before = poll_until(session, lambda b: sum(map(len, b)) >= 10)
        first.stop()
        poll_until(session, lambda b: "disconnect" in ctx.kinds(), timeout=10)
        assert not session.connected
        # Down for a while: attempts fail on the fast schedule, each one an event.
        poll_until(session, lambda b: ctx.kinds().count("reconnect_failed") >= 3, timeout=10)
        venues.start([path], port=first.port, speed="max")
        after = poll_until(session, lambda b: sum(map(len, b)) >= 1 + 120)
    finally:
        session.close()
    ours = ctx.ids["ESU4"]
    assert before[0]["instrument_id"][0] == ours
    reset = after[0]  # the first batch after reconnecting clears what the old connection built
    assert (reset["kind"] == Kind.RESET).all() and reset["instrument_id"].tolist() == [ours]
    records = np.concatenate(after[1:])
    assert len(records) == 120 and (records["kind"] == Kind.TRADE).all()  # the new session, from its start
    kinds = ctx.kinds()
    assert kinds.index("disconnect") < kinds.index("reconnect_failed") < kinds.index("reconnect")
    assert kinds.count("reconnect") == 1 and factory.made == 2 + kinds.count("reconnect_failed")
    assert "connection lost: gateway closed the connection" in next(m for k, m, _ in ctx.events if k == "disconnect")
    waits = [float(re.search(r"retrying in ([\d.e-]+) s", m).group(1)) for k, m, _ in ctx.events
             if k in ("disconnect", "reconnect_failed")]
    assert waits[:4] == [0.01, 0.02, 0.04, 0.05]  # the schedule, then max_delay
    assert session.instruments() == [ours]


def test_gateway_gone_for_good_gives_up(venues):
    venue = venues.start([sample(ESU4_TRADES)], speed=50.0)
    ctx = Ctx()
    factory = Counting(venue.port, ctx)
    session = reconnecting(factory, ctx, max_failures=4)
    session.open()
    try:
        poll_until(session, lambda b: len(b) >= 1)
        venue.stop()
        with pytest.raises(FeedFailed, match="gave up after 4 failed attempts; last error: cannot connect"):
            poll_until(session, lambda b: False, timeout=10)
        with pytest.raises(FeedFailed):  # and stays failed: no silent idling, no tight loop
            session.poll(0.01)
    finally:
        session.close()
    assert factory.made == 1 + 4
    errors = [(m, c) for k, m, c in ctx.events if k == "error"]
    assert len(errors) == 1 and ctx.counts["errors"] == 1
    assert ctx.kinds().count("reconnect_failed") == 3 and "reconnect" not in ctx.kinds()


def test_sessions_that_die_before_delivering_count_as_failures(venues):
    # Every connection is accepted, gets no record (unknown symbol) and is closed by the gateway.
    venue = venues.start([sample(ESU4_TRADES)], close_at_end=True)
    ctx = Ctx()
    factory = Counting(venue.port, ctx)
    factory.opt = options(venue.port, stype_in="instrument_id")  # "ESU4" is not an instrument id
    session = reconnecting(factory, ctx, max_failures=3)
    session.open()
    with pytest.raises(FeedFailed, match="gave up after 3 failed attempts; last error: gateway closed"):
        poll_until(session, lambda b: False, timeout=10)
    session.close()
    assert factory.made == 1 + 3 and ctx.kinds().count("reconnect") == 3  # the first session, then 3 attempts
    assert ctx.counts["errors"] == 4 + 1  # the gateway's error for each session, then giving up


def test_first_connect_is_retried_without_blocking_the_caller():
    port = free_port()
    ctx = Ctx()
    factory = Counting(port, ctx)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    policy = ReconnectPolicy(delays=[0.3], max_delay=0.3, jitter=0, max_failures=2)
    session = ReconnectingSession(factory, policy, ctx, reset_records=ctx.reset_records, sleep=sleep)
    session.open()  # nothing listens: not fatal yet
    assert factory.made == 1 and ctx.kinds() == ["reconnect_failed"]
    assert session.poll(0.01) is None  # waiting for the next attempt: returns after its timeout
    assert factory.made == 1 and slept == [0.01]
    with pytest.raises(FeedFailed, match="gave up after 2 failed attempts"):
        poll_until(session, lambda b: False, timeout=5)
    assert factory.made == 1 + 2  # the first connect, then attempts 1 and 2
    assert max(slept) <= 0.02  # the 0.3 s wait was slept in poll-sized steps


def test_auth_refused_fails_at_once(venues):
    venue = venues.start([sample(ESU4_TRADES)], api_key="db-" + "Q" * 27 + "QWERT")
    ctx = Ctx()
    factory = Counting(venue.port, ctx)
    session = reconnecting(factory, ctx, max_failures=5)
    with pytest.raises(FeedFailed, match="connect refused: gateway 127.0.0.1:\\d+ refused authentication"):
        session.open()
    with pytest.raises(FeedFailed):
        session.poll(0.01)
    assert factory.made == 1  # no retry loop
    assert [(k, c) for k, _, c in ctx.events] == [("error", 1)]
    assert KEY not in " ".join(m for _, m, _ in ctx.events)
    session.close()


# ---------------------------------------------------------------------------------------------- issue 8, defect 7


def test_first_retry_is_attempt_1_after_the_first_delay():
    ctx = Ctx()
    attempts: list[tuple[int, str]] = []
    session = ReconnectingSession(Counting(free_port(), ctx), ReconnectPolicy(**FAST, max_failures=3), ctx,
                                  reset_records=ctx.reset_records, track=lambda n, why: attempts.append((n, why)))
    session.open()  # nothing listens
    session.close()
    (kind, message, _), = ctx.events
    assert kind == "reconnect_failed" and message.endswith("; retrying in 0.01 s (attempt 1 of 3)")
    assert session.attempt == 1 and attempts[0][0] == 1 and "(attempt 1 of 3)" in attempts[0][1]


def test_an_attempt_in_progress_survives_a_restart_of_the_feed_process():
    # A process restarted during attempt 2 of 2 resumes the count: that attempt failed, and it was the last.
    ctx = Ctx()
    factory = Counting(free_port(), ctx)
    session = ReconnectingSession(factory, ReconnectPolicy(**FAST, max_failures=2), ctx,
                                  reset_records=ctx.reset_records, attempt=2)
    with pytest.raises(FeedFailed, match="gave up after 2 failed attempts; last error: the feed process restarted "
                                         "during reconnect attempt 2"):
        session.open()
    assert factory.made == 0
    # Restarted during attempt 1 of 2: attempt 2 is next, on its own delay.
    ctx = Ctx()
    session = ReconnectingSession(Counting(free_port(), ctx), ReconnectPolicy(**FAST, max_failures=2), ctx,
                                  reset_records=ctx.reset_records, attempt=1)
    session.open()
    assert session.attempt == 2 and ctx.events[0][1].endswith("retrying in 0.02 s (attempt 2 of 2)")
    session.close()


def test_a_silent_gateway_keeps_the_feed_heartbeating_while_connecting():
    with HostileGateway("silent") as gateway:
        ctx = Ctx()
        session = Session(options(gateway.port, connect_timeout_s=1.6), feed("ESU4"), ctx)
        started = time.monotonic()
        with pytest.raises(SessionError, match="did not complete the control phase in time"):
            session.open()
        assert 1.5 <= time.monotonic() - started < 5
    assert ctx.heartbeats >= 4  # at least every 0.5 s: the supervisor never sees a hung feed


@pytest.mark.timeout(120)
def test_connected_but_no_data_counts_as_a_failed_attempt():
    # The gateway authenticates every session and then sends nothing; each session dies of the
    # liveness timeout (11 s: longer than a session needs to look healthy by uptime alone).
    with HostileGateway("auth_then_silent") as gateway:
        ctx = Ctx()
        factory = Counting(gateway.port, ctx, heartbeat_interval_s=1, liveness_timeout_s=11)
        session = reconnecting(factory, ctx, max_failures=1)
        session.open()
        try:
            with pytest.raises(FeedFailed, match="gave up after 1 failed attempts; last error: no data or heartbeat"):
                poll_until(session, lambda b: False, timeout=60)
        finally:
            session.close()
    assert factory.made == gateway.connections == 2
    assert [k for k in ctx.kinds() if k != "connected"] == ["disconnect", "reconnect", "error"]
