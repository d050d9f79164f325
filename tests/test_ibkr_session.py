"""The `ibkr` session against the local venue: contract choice, every error path, pacing, versions.

Real parts only: an `IbkrVenue` on 127.0.0.1 speaks the TWS API protocol and injects each
failure; the session is the one the plant runs (directly, or under the plant's one reconnect
policy, `ReconnectingSession`)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from _common import wait_until
from _data import sample
from _databento import Ctx
from _ibkr import ESM4_MBO, ESU4_TRADES, drain, feed, of_kind, options, poll_until

from streamctl.ingest.reconnect import ReconnectingSession, ReconnectPolicy
from streamctl.ingest.vendor_api import SessionError
from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.session import Session
from streamctl.ingest.vendors.ibkr.venue import Failure
from streamctl.shm.records import RECORD_DTYPE, Kind

pytestmark = pytest.mark.timeout(120)

ESU4_COUNT = 120


def _files():
    return [sample(ESU4_TRADES), sample(ESM4_MBO)]


def _open(venue, *symbols: str, **overrides) -> tuple[Session, Ctx]:
    ctx = Ctx()
    session = Session(options(venue.port, **overrides), feed(*symbols), ctx)
    session.open()
    return session, ctx


def _trades(records: np.ndarray, ctx: Ctx, symbol: str) -> np.ndarray:
    return of_kind(records[records["instrument_id"] == ctx.ids.get(symbol, -1)], Kind.TRADE)


def _until_error(session: Session, timeout: float = 30.0) -> tuple[np.ndarray, SessionError]:
    """Poll until the session ends; what it delivered first and why it ended."""
    batches: list[np.ndarray] = [np.zeros(0, RECORD_DTYPE)]
    error: list[SessionError] = []

    def step() -> None:
        try:
            batch = session.poll(0.05)
        except SessionError as exc:
            error.append(exc)
            return
        if batch is not None:
            batches.append(batch.copy())

    wait_until(lambda: error, timeout, "the session to end", step=step)
    return np.concatenate(batches), error[0]


def test_a_root_resolves_to_the_front_month_and_says_so(ibkr_venues):
    venue = ibkr_venues.start(_files())
    session, ctx = _open(venue, "ES", trades=True, quotes=False)
    try:
        records = poll_until(session, lambda r: len(of_kind(r, Kind.TRADE)) > 0)
    finally:
        session.close()
    assert session.resolved["ES"].local_symbol == "ESM4"  # expires 2024-06-21, before ESU4 (2024-09-20)
    assert set(np.unique(records["instrument_id"])) == {ctx.ids["ESM4"]}
    con_id = session.resolved["ES"].con_id
    assert ("system", f"ES -> ESM4 (conId {con_id}, last trade 20240621, front month); also listed: ESU4 (20240920)",
            None) in ctx.events


def test_an_explicit_contract_month_takes_that_contract(ibkr_venues):
    venue = ibkr_venues.start(_files())
    session, ctx = _open(venue, "ES", expiry="202409", quotes=False)
    try:
        records = poll_until(session, lambda r: len(of_kind(r, Kind.TRADE)) >= ESU4_COUNT)
    finally:
        session.close()
    assert session.resolved["ES"].local_symbol == "ESU4"
    assert len(_trades(records, ctx, "ESU4")) == ESU4_COUNT
    assert any("contract month 202409" in m for _, m, _ in ctx.events)


def test_a_symbol_without_a_subscription_is_refused_and_the_others_go_on(ibkr_venues):
    venue = ibkr_venues.start(_files(), not_subscribed=frozenset({"ESM4"}))
    session, ctx = _open(venue, "ESU4", "ESM4", "NOPE", depth_rows=5)
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
        wait_until(lambda: len(session.refused) == 4, 10, "the refusals", step=lambda: session.poll(0.05))
    finally:
        session.close()
    assert set(session.refused) == {"ESM4 trades", "ESM4 quotes", "ESM4 depth", "NOPE contract"}
    codes = sorted(code for kind, _, code in ctx.events if kind == "error")
    assert codes == [api.Code.NO_SECURITY_DEFINITION, api.Code.NOT_SUBSCRIBED, api.Code.NEEDS_SUBSCRIPTION,
                     api.Code.NEEDS_SUBSCRIPTION]
    assert ctx.counts["errors"] == 4
    assert len(_trades(records, ctx, "ESU4")) == ESU4_COUNT


def test_a_feed_whose_every_symbol_is_refused_fails_without_retry(ibkr_venues):
    venue = ibkr_venues.start(_files(), not_subscribed=frozenset({"ESU4"}))
    session, ctx = _open(venue, "ESU4", "NOPE")
    try:
        _, error = _until_error(session)
    finally:
        session.close()
    assert not error.retry and error.code == api.Code.NEEDS_SUBSCRIPTION
    assert "refused every symbol" in str(error)


@pytest.mark.parametrize(("kind", "code", "why"), [
    ("competing", api.Code.COMPETING_SESSION, "competing live session"),
    ("outage-1101", api.Code.RESTORED_DATA_LOST, "subscriptions were lost"),
    ("disconnect", None, "gateway closed the connection"),
])
def test_session_ending_failures_end_the_session_for_a_reconnect(ibkr_venues, kind, code, why):
    venue = ibkr_venues.start(_files(), failure=Failure(kind, after=50, outage=0.2))
    session, ctx = _open(venue, "ESU4", quotes=False)
    try:
        records, error = _until_error(session)
    finally:
        session.close()
    assert error.retry and error.code == code and why in str(error)
    assert len(_trades(records, ctx, "ESU4")) == 50  # what came before the failure is delivered


def test_an_outage_with_data_kept_is_announced_and_the_data_carries_on(ibkr_venues):
    venue = ibkr_venues.start(_files(), failure=Failure("outage-1102", after=30, outage=0.3))
    session, ctx = _open(venue, "ESU4", quotes=False)
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
    finally:
        session.close()
    assert len(_trades(records, ctx, "ESU4")) == ESU4_COUNT
    notices = [code for kind, _, code in ctx.events if kind == "system"]
    assert notices[:3] == [2104, 2106, 2158]
    assert notices.index(api.Code.CONNECTIVITY_LOST) < notices.index(api.Code.RESTORED_DATA_KEPT)


def test_a_silent_gateway_is_probed_then_given_up(ibkr_venues):
    venue = ibkr_venues.start(_files(), failure=Failure("silence", after=10))
    session, ctx = _open(venue, "ESU4", quotes=False, probe_interval_s=0.2, liveness_timeout_s=1.0)
    try:
        records, error = _until_error(session)
    finally:
        session.close()
    assert error.retry and "liveness timeout" in str(error)
    assert len(_trades(records, ctx, "ESU4")) == 10
    (connection,) = venue.connections
    assert not any(r[0] == "49" for r in connection.requests)  # asked while silent: never heard


def test_a_quiet_gateway_answers_the_time_probes_and_stays_up(ibkr_venues):
    venue = ibkr_venues.start(_files())
    session, ctx = _open(venue, "ESU4", quotes=False, probe_interval_s=0.1, liveness_timeout_s=0.5)
    try:
        poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
        (connection,) = venue.connections
        wait_until(lambda: sum(r[0] == "49" for r in connection.requests) >= 5, 30, "five time probes",
                   step=lambda: session.poll(0.05))  # would raise on a liveness timeout
    finally:
        session.close()


@pytest.mark.parametrize(("kind", "ends"), [("malformed", False), ("oversized", True)])
def test_bad_frames_are_counted_and_skipped_or_end_the_session(ibkr_venues, kind, ends):
    venue = ibkr_venues.start(_files(), failure=Failure(kind, after=20))
    session, ctx = _open(venue, "ESU4", quotes=False)
    try:
        if ends:
            records, error = _until_error(session)
            assert "unframeable" in str(error) and error.retry
            assert ctx.counts["malformed"] == 1
            assert len(_trades(records, ctx, "ESU4")) == 20
        else:
            records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
            assert ctx.counts["malformed"] == 3
            assert len(_trades(records, ctx, "ESU4")) == ESU4_COUNT
            said = [m for k, m, _ in ctx.events if k == "malformed"]
            assert len(said) == 2 and any("777" in m and "not one the API defines" in m for m in said)
    finally:
        session.close()


def test_a_client_id_in_use_is_refused(ibkr_venues):
    venue = ibkr_venues.start(_files())
    first, _ = _open(venue, "ESU4")
    try:
        with pytest.raises(SessionError, match="client id is in use"):
            _open(venue, "ESU4")
    finally:
        first.close()


def test_requests_are_paced_under_the_gateways_limit(ibkr_venues):
    venue = ibkr_venues.start(_files())
    symbols = [f"NO{i:02d}" for i in range(70)] + ["ESU4"]
    session, ctx = _open(venue, *symbols, quotes=False, max_messages_per_s=45)
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT, timeout=60)
    finally:
        session.close()
    assert len(_trades(records, ctx, "ESU4")) == ESU4_COUNT
    (connection,) = venue.connections
    assert len(connection.requests) == 71 + 1  # the contracts, ESU4's trades: never cut off (error 100)
    assert ctx.counts["errors"] == 70 and api.Code.MAX_RATE_EXCEEDED not in [c for _, _, c in ctx.events]


def test_the_venue_disconnects_a_client_over_fifty_messages_a_second(ibkr_venues):
    venue = ibkr_venues.start(_files())
    with socket.create_connection(("127.0.0.1", venue.port), timeout=10) as sock:
        sock.sendall(api.handshake())
        sock.sendall(api.encode(api.Out.START_API, 2, 9, ""))
        sock.sendall(b"".join(api.encode(api.Out.REQ_CURRENT_TIME, 1) for _ in range(60)))
        frames = api.FrameReader()
        while chunk := sock.recv(1 << 16):
            frames.feed(chunk)
    codes = [int(f[3]) for f in frames.messages() if f[0] == b"4"]
    assert api.Code.MAX_RATE_EXCEEDED in codes


@pytest.mark.parametrize("version", [164, 170, 178])
def test_each_server_version_negotiates_and_streams(ibkr_venues, version):
    venue = ibkr_venues.start(_files(), server_version=version)
    session, ctx = _open(venue, "ESU4", quotes=False)
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
    finally:
        session.close()
    assert session.server_version == version and len(_trades(records, ctx, "ESU4")) == ESU4_COUNT
    (connection,) = venue.connections
    contract_request = next(r for r in connection.requests if r[0] == "9")
    assert len(contract_request) == (19 if version >= api.VERSION_ISSUER_ID else 18)  # issuerId from 176


def test_reconnect_policy_resubscribes_after_data_was_lost(ibkr_venues):
    venue = ibkr_venues.start(_files(), failure=Failure("outage-1101", after=40, connections=1, outage=0.1))
    ctx = Ctx()
    policy = ReconnectPolicy(delays=[0.1], jitter=0.0, max_failures=3)
    session = ReconnectingSession(lambda: Session(options(venue.port, quotes=False), feed("ESU4"), ctx), policy, ctx,
                                  reset_records=ctx.reset_records)
    session.open()
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= 40 + ESU4_COUNT)
        records = np.concatenate([records, drain(session)])
    finally:
        session.close()
    assert ctx.kinds().count("disconnect") == 1 and ctx.kinds().count("reconnect") == 1
    assert len(venue.connections) == 2 and any(r[0] == "97" for r in venue.connections[1].requests)
    assert len(of_kind(records, Kind.RESET)) == 1  # the book of ESU4 is cleared once
    assert len(_trades(records, ctx, "ESU4")) == 40 + ESU4_COUNT  # the second session plays the file again


def test_a_csv_of_stocks_is_served_and_streamed_under_its_symbols(ibkr_venues, tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text("ts_event,symbol,price,size,bid,ask,bid_size,ask_size\n"
                    "2024-07-01T14:30:00.100Z,AAPL,216.75,100,,,,\n"
                    "2024-07-01T14:30:00.200Z,AAPL,,,216.74,216.76,300,200\n"
                    "2024-07-01T14:30:01.900Z,MSFT,456.5,3,,,,\n"
                    "2024-07-01T14:30:02.000Z,AAPL,216.8,25,,,,\n")
    venue = ibkr_venues.start([path])
    assert {(c.local_symbol, c.sec_type, c.exchange) for c in venue.tape.contracts.values()} == {
        ("AAPL", "STK", "SMART"), ("MSFT", "STK", "SMART")}
    session, ctx = _open(venue, "AAPL", sec_type="STK", exchange="SMART")
    try:
        records = poll_until(session, lambda r: len(_trades(r, ctx, "AAPL")) >= 2 and len(of_kind(r, Kind.QUOTE)) >= 1)
    finally:
        session.close()
    second = 1_719_844_200 * 1_000_000_000  # 2024-07-01T14:30:00Z
    trades = _trades(records, ctx, "AAPL")
    assert trades[["ts_event", "price", "size"]].tolist() == [(second, 216_750_000_000, 100.0),
                                                              (second + 2 * 10**9, 216_800_000_000, 25.0)]
    (quote,) = of_kind(records, Kind.QUOTE)
    assert (quote["price"], quote["price2"], quote["size"], quote["size2"]) == (216_740_000_000, 216_760_000_000, 300, 200)
    assert set(ctx.ids) == {"AAPL"}


def test_a_session_compiles_nothing_after_the_warm_up(ibkr_venues):
    from streamctl.ingest.vendors.ibkr import kernels

    kernels.warm_up()
    before = list(kernels.scan.signatures)
    venue = ibkr_venues.start(_files())
    session, ctx = _open(venue, "ESU4", quotes=False)
    try:
        poll_until(session, lambda r: len(_trades(r, ctx, "ESU4")) >= ESU4_COUNT)
    finally:
        session.close()
    assert list(kernels.scan.signatures) == before
