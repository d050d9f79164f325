"""Our Alpaca session against the local venue: every documented error code, at auth and
mid-stream; malformed, unknown and oversized frames; a silent peer; corrections and cancels;
and reconnects with resubscription through the plant's one reconnect policy."""

from __future__ import annotations

import numpy as np
import pytest
from _alpaca import (
    ESU4_TRADES,
    KEY,
    SECRET,
    Ctx,
    collect,
    feed,
    file_records,
    open_session,
    options,
    same_ticks,
)
from _common import wait_until
from _data import sample

from streamctl.ingest.reconnect import ReconnectingSession, ReconnectPolicy
from streamctl.ingest.vendor_api import SessionError
from streamctl.ingest.vendors.alpaca.codes import CODES
from streamctl.ingest.vendors.alpaca.session import Session
from streamctl.ingest.vendors.alpaca.venue import AlpacaVenue, parse_injection
from streamctl.shm.records import RECORD_DTYPE, Kind

pytestmark = pytest.mark.timeout(120)


def _venue(*inject: str, **kwargs) -> AlpacaVenue:
    return AlpacaVenue([str(sample(ESU4_TRADES))], key=KEY, secret=SECRET,
                       injections=[parse_injection(i) for i in inject], **kwargs)


def _drain(session: Session, *, want: int, timeout: float = 30.0) -> tuple[np.ndarray, SessionError | None]:
    """Poll until `want` records arrived or the session failed: (records, the failure or None)."""
    got: list[np.ndarray] = [np.empty(0, RECORD_DTYPE)]
    failure: list[SessionError] = []

    def step() -> None:
        try:
            batch = session.poll(0.05)
        except SessionError as exc:
            failure.append(exc)
            return
        if batch is not None and len(batch):
            got.append(batch.copy())

    wait_until(lambda: failure or sum(map(len, got)) >= want, timeout, "records or a failure", step)
    return np.concatenate(got), (failure[0] if failure else None)


def _ticks() -> np.ndarray:
    return file_records(ESU4_TRADES)


def _ticks_before(venue: AlpacaVenue, position: int) -> int:
    """Trades and quotes among the venue's first `position` messages (it also sends minute bars,
    which the plant does not subscribe)."""
    return sum(item.tag != "b" for item in venue.serving.stream.items[:position])


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_auth_error_code_fails_open_with_its_retry_rule(code):
    with _venue(auth_error=code) as venue:
        with pytest.raises(SessionError) as info:
            open_session(venue.port)
    assert info.value.code == code and info.value.retry == CODES[code].retry
    assert f"Alpaca error {code} `{CODES[code].msg}`" in str(info.value)


def test_wrong_secret_is_auth_failed_and_never_retried():
    with _venue() as venue:
        with pytest.raises(SessionError, match="402 `auth failed`: the key or secret is wrong") as info:
            open_session(venue.port, secret="nope")
    assert info.value.retry is False
    assert "nope" not in str(info.value) and "nope" not in repr(options(1, secret="nope"))


def test_second_connection_over_the_limit_gets_406():
    with _venue(connection_limit=1) as venue:
        first, _ = open_session(venue.port)
        with pytest.raises(SessionError, match="406 `connection limit exceeded`") as info:
            open_session(venue.port)
        first.close()
    assert info.value.retry is False


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_error_code_mid_stream(code):
    """Records before the error are delivered; the error is an event with its code; a code that
    retrying cannot fix fails the session (retry=False), the others end or keep the connection."""
    ticks = _ticks()
    with _venue(f"error:{code}@50") as venue:
        session, ctx = open_session(venue.port)
        records, failure = _drain(session, want=len(ticks))
        session.close()
        before = _ticks_before(venue, 50)
    assert ("error", f"Alpaca error {code} `{CODES[code].msg}`: {CODES[code].meaning}", code) in ctx.events
    assert ctx.counts["errors"] == 1
    same_ticks(records[:before], ticks[:before])
    if not CODES[code].retry:
        assert failure is not None and failure.retry is False and failure.code == code and len(records) == before
    elif code in (401, 403):  # answers one message; the connection and the data go on
        assert failure is None
        same_ticks(records, ticks)
    else:
        assert failure is not None and failure.retry and len(records) == before


@pytest.mark.parametrize("what, counter", [("malformed", "malformed"), ("badfield", "malformed"), ("unknown", None)])
def test_bad_frames_are_counted_and_skipped(what, counter):
    ticks = _ticks()
    with _venue(f"{what}@30") as venue:
        session, ctx = open_session(venue.port)
        records, failure = _drain(session, want=len(ticks))
        session.close()
    assert failure is None
    same_ticks(records, ticks)
    if counter:
        assert ctx.counts == {counter: 1} and ctx.kinds().count("malformed") == 1
    else:
        assert not ctx.counts and session.skipped == {"zz": 1} and "skipped" in ctx.kinds()


def test_an_oversized_frame_ends_the_connection_and_is_counted():
    with _venue("oversized@30") as venue:
        session, ctx = open_session(venue.port, max_frame_bytes=1 << 20)
        records, failure = _drain(session, want=10**6)
        before = _ticks_before(venue, 30)
    assert len(records) == before and failure is not None and failure.retry
    assert ctx.counts["malformed"] == 1 and "max_frame_bytes" in " ".join(m for _, m, _ in ctx.events)


def test_a_peer_that_stops_answering_is_dropped_by_the_ping_timeout():
    with _venue("silence@30") as venue:
        session, _ = open_session(venue.port, ping_interval_s=0.2, ping_timeout_s=0.5)
        # The failure is due ~0.7 s in, plus the session's 2 s wait for an answer to its close
        # frame (a silent peer never answers; the library's default wait was 10 s).
        records, failure = _drain(session, want=10**6, timeout=8.0)
        before = _ticks_before(venue, 30)
    assert len(records) == before and failure is not None and failure.retry
    assert "stopped answering pings" in str(failure) or "ping timeout" in str(failure)


def test_corrections_and_cancels_become_records_naming_the_trade():
    ticks = _ticks()
    with _venue("cancel:10@40", "correct:12@41") as venue:
        stream = venue.serving.stream.items
        cancelled, corrected = stream[10].fields, stream[12].fields
        session, ctx = open_session(venue.port)
        records = collect(session, lambda r: len(r) >= len(ticks) + 2)
        session.close()
    voids = records[(records["kind"] == Kind.CANCEL) | (records["kind"] == Kind.CORRECTION)]
    assert voids["kind"].tolist() == [Kind.CANCEL, Kind.CORRECTION]
    assert voids["sequence"].tolist() == [cancelled["i"], corrected["i"]]
    assert voids["price"][0] == round(cancelled["p"] * 1e9) and voids["size"][0] == cancelled["s"]
    assert voids["price"][1] == round(round(corrected["p"] * 1.01, 2) * 1e9)
    assert voids["price2"][1] == corrected["i"] + 1_000_000_000 and voids["size2"][1] == corrected["s"]
    assert voids["ts_event"].tolist() == [cancelled["t"], corrected["t"]]
    same_ticks(records[records["kind"] == Kind.TRADE], ticks)


def test_reconnects_resubscribe_and_lose_nothing_through_the_reconnect_policy():
    """Two injected disconnects: the policy reconnects, each new session subscribes again, RESET
    records come first after each reconnect, and the ticks add up to the file exactly once."""
    ticks = _ticks()
    ctx = Ctx()
    with _venue("disconnect@40", "disconnect@90") as venue:
        opts = options(venue.port)
        policy = ReconnectPolicy(delays=[0.05], max_delay=0.1, jitter=0.0, max_failures=3)
        session = ReconnectingSession(lambda: Session(opts, feed("ESU4"), ctx), policy, ctx,
                                      reset_records=ctx.reset_records)
        session.open()
        records = collect(session, lambda r: np.count_nonzero(r["kind"] == Kind.TRADE) >= len(ticks))
        session.close()
        started = venue.sessions_started
        first, second = _ticks_before(venue, 40), _ticks_before(venue, 90)
    resets = np.flatnonzero(records["kind"] == Kind.RESET)
    assert resets.tolist() == [first, second + 1]  # right where each connection was lost
    same_ticks(records[records["kind"] != Kind.RESET], ticks)
    assert ctx.kinds().count("disconnect") == 2 and ctx.kinds().count("reconnect") == 2
    assert ctx.kinds().count("connected") == started == 3


def test_a_host_that_accepts_and_never_answers_times_out_while_the_feed_heartbeats():
    from _databento import HostileGateway

    with HostileGateway("silent") as silent:
        ctx = Ctx()
        with pytest.raises(SessionError, match="cannot connect to ws://127.0.0.1") as info:
            open_session(silent.port, ctx=ctx, connect_timeout_s=1.5)
    assert info.value.retry and ctx.heartbeats >= 3  # one every 0.5 s while the handshake hangs
