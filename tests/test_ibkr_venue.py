"""The official client proves the local IB venue faithful: `ib_async` connects, resolves the
contracts, and receives exactly the file's tick-by-tick trades and bid/ask and the book's L2
rows; our own session, on the same venue, receives the same ticks and builds the same book."""

from __future__ import annotations

import numpy as np
import pytest
from _common import wait_until
from _data import sample
from _databento import Ctx
from _ibkr import ESM4_MBO, ESU4_MBP1, drain, feed, of_kind, options, poll_until
from ib_async import IB, Future, TickByTickAllLast, TickByTickBidAsk

from streamctl.ingest.vendors.ibkr.session import Session
from streamctl.shm.records import PRICE_SCALE, UNDEF_PRICE, Kind, Side

pytestmark = pytest.mark.timeout(120)

ROWS = 10


def _expected(venue, symbol: str):
    """The tape's trades, quotes (empty sides as IB sends them: 0) and final top-ROWS book of `symbol`."""
    tape = venue.tape
    (iid,) = [i for i, c in tape.contracts.items() if c.local_symbol == symbol]
    mine = tape.records[tape.records["instrument_id"] == iid]
    trades = [(r["price"] / PRICE_SCALE, float(r["size"])) for r in of_kind(mine, Kind.TRADE)]
    quotes = [(0.0 if r["price"] == UNDEF_PRICE else r["price"] / PRICE_SCALE,
               0.0 if r["price2"] == UNDEF_PRICE else r["price2"] / PRICE_SCALE,
               0.0 if r["price"] == UNDEF_PRICE else float(r["size"]),
               0.0 if r["price2"] == UNDEF_PRICE else float(r["size2"])) for r in of_kind(mine, Kind.QUOTE)]
    book: dict[int, dict[int, float]] = {Side.BID: {}, Side.ASK: {}}
    for r in of_kind(mine, Kind.BOOK):
        levels = book[int(r["side"])]
        if r["size"] > 0:
            levels[int(r["price"])] = float(r["size"])
        else:
            levels.pop(int(r["price"]), None)
    bids = sorted(book[Side.BID].items(), reverse=True)[:ROWS]
    asks = sorted(book[Side.ASK].items())[:ROWS]
    return trades, quotes, ([(p / PRICE_SCALE, s) for p, s in bids], [(p / PRICE_SCALE, s) for p, s in asks])


def test_ib_async_receives_exactly_the_files_ticks_and_book(ibkr_venues):
    venue = ibkr_venues.start([sample(ESU4_MBP1), sample(ESM4_MBO)])
    trades, quotes, _ = _expected(venue, "ESU4")
    _, _, (bids, asks) = _expected(venue, "ESM4")
    assert len(trades) == 120 and len(quotes) == 2288 and len(bids) == len(asks) == ROWS

    ib = IB()
    ib.connect("127.0.0.1", venue.port, clientId=7, timeout=10)
    try:
        assert ib.client.serverVersion() == 178 and ib.managedAccounts() == ["DU1234567"]
        details = ib.reqContractDetails(Future("ES", exchange="CME"))
        assert sorted((d.contract.localSymbol, d.contract.lastTradeDateOrContractMonth, d.contract.secType)
                      for d in details) == [("ESM4", "20240621", "FUT"), ("ESU4", "20240920", "FUT")]
        contracts = {d.contract.localSymbol: d.contract for d in details}
        assert all(c.conId > 0 and c.exchange == "CME" for c in contracts.values())

        seen: list = []
        ib.pendingTickersEvent += lambda tickers: [seen.extend(t.tickByTicks) for t in tickers]
        ib.reqTickByTickData(contracts["ESU4"], "AllLast", 0, False)
        ib.reqTickByTickData(contracts["ESU4"], "BidAsk", 0, False)
        depth = ib.reqMktDepth(contracts["ESM4"], numRows=ROWS)
        (connection,) = venue.connections
        wait_until(lambda: len(seen) >= len(trades) + len(quotes) and connection.subscriptions == 3
                   and connection.caught_up(), 60,
                   "every tick and depth row", step=lambda: ib.sleep(0.05))
        got_trades = [(t.price, t.size) for t in seen if isinstance(t, TickByTickAllLast)]
        got_quotes = [(t.bidPrice, t.askPrice, t.bidSize, t.askSize) for t in seen if isinstance(t, TickByTickBidAsk)]
        assert got_trades == trades
        assert got_quotes == quotes
        rows = lambda: ([(d.price, d.size) for d in depth.domBids], [(d.price, d.size) for d in depth.domAsks])  # noqa: E731
        wait_until(lambda: rows() == (bids, asks), 30, f"the book's last rows (have {rows()})",
                   step=lambda: ib.sleep(0.05))
    finally:
        ib.disconnect()


def test_our_session_receives_what_ib_async_receives(ibkr_venues):
    venue = ibkr_venues.start([sample(ESU4_MBP1), sample(ESM4_MBO)])
    trades, quotes, _ = _expected(venue, "ESU4")
    _, _, (bids, asks) = _expected(venue, "ESM4")
    ctx = Ctx()
    session = Session(options(venue.port, depth_rows=ROWS), feed("ESU4", "ESM4"), ctx)
    session.open()
    try:
        (connection,) = wait_until(lambda: venue.connections, 10, "the session's connection")
        records = poll_until(session, lambda r: connection.subscriptions == 6 and connection.caught_up())
        records = np.concatenate([records, drain(session)])
    finally:
        session.close()
    esu4, esm4 = ctx.ids["ESU4"], ctx.ids["ESM4"]
    t = of_kind(records[records["instrument_id"] == esu4], Kind.TRADE)
    assert [(r["price"] / PRICE_SCALE, float(r["size"])) for r in t] == trades
    tape = venue.tape
    tape_trades = of_kind(tape.records[tape.records["instrument_id"] == 1], Kind.TRADE)
    assert tape.contracts[1].local_symbol == "ESU4"
    assert (t["ts_event"] == tape_trades["ts_event"] // 1_000_000_000 * 1_000_000_000).all()  # IB sends seconds
    q = of_kind(records[records["instrument_id"] == esu4], Kind.QUOTE)
    assert [(0.0 if r["price"] == UNDEF_PRICE else r["price"] / PRICE_SCALE,
             0.0 if r["price2"] == UNDEF_PRICE else r["price2"] / PRICE_SCALE,
             float(r["size"]), float(r["size2"])) for r in q] == quotes
    book: dict[int, dict[int, float]] = {Side.BID: {}, Side.ASK: {}}
    levels = of_kind(records, Kind.BOOK)
    assert (levels["instrument_id"] == esm4).all() and levels["flags"][-1] & 0x80
    for r in levels:
        side = book[int(r["side"])]
        if r["size"] > 0:
            side[int(r["price"])] = float(r["size"])
        else:
            side.pop(int(r["price"]), None)
    assert sorted(((p / PRICE_SCALE, s) for p, s in book[Side.BID].items()), reverse=True) == bids
    assert sorted((p / PRICE_SCALE, s) for p, s in book[Side.ASK].items()) == asks
    assert ctx.counts == {}
