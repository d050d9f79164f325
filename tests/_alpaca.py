"""Shared pieces of the Alpaca tests: sample files, a recording FeedContext, the file's reference
trades and quotes (decoded by the shared DBN decoder, not by the venue), sessions."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import _databento
import msgspec
import numpy as np
from _common import wait_until
from _data import sample

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file
from streamctl.ingest.vendors.alpaca.options import Options
from streamctl.ingest.vendors.alpaca.session import Session
from streamctl.shm.records import RECORD_DTYPE, Kind

KEY, SECRET = "PKTESTKEY", "test-secret"
ESU4_TRADES = "nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_MBP1 = "nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"


class Ctx(_databento.Ctx):
    """The Databento tests' recording FeedContext, with ids from 1 (0 is NO_INSTRUMENT: an Alpaca
    session drops such records, as the feed loop would)."""

    feed_name = "alp"

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids) + 1)


def file_records(name: str) -> np.ndarray:
    """The file's trades and two-sided quotes in file order, as the shared DBN decoder reads them."""
    decoder = DbnDecoder(ts_recv="record")
    decoder.write(read_file(sample(name)))
    records = decoder.finish().records
    keep = (records["kind"] == Kind.TRADE) | (records["kind"] == Kind.QUOTE)
    return records[keep]


def options(port: int, **overrides) -> Options:
    raw = {"key": KEY, "secret": SECRET, "url": f"ws://127.0.0.1:{port}"}
    raw.update(overrides)
    return msgspec.convert(raw, Options)


def feed(*symbols: str) -> SimpleNamespace:
    return SimpleNamespace(name="alp", symbols=list(symbols))


def open_session(port: int, *symbols: str, ctx: Ctx | None = None, **overrides) -> tuple[Session, Ctx]:
    ctx = ctx or Ctx()
    session = Session(options(port, **overrides), feed(*(symbols or ("ESU4",))), ctx)
    session.open()
    return session, ctx


def collect(session, until, *, timeout: float = 30.0, poll: float = 0.05) -> np.ndarray:
    """Poll `session` until ``until(records so far)`` holds; fails the test after `timeout` s."""
    batches: list[np.ndarray] = [np.empty(0, RECORD_DTYPE)]

    def step() -> None:
        batch = session.poll(poll)
        if batch is not None and len(batch):
            batches.append(batch.copy())

    wait_until(lambda: until(np.concatenate(batches)), timeout, "the session's records", step)
    return np.concatenate(batches)


def same_ticks(ours: np.ndarray, reference: np.ndarray) -> None:
    """Our records carry the file's trades and quotes: kind, time, prices and sizes, in order."""
    assert len(ours) == len(reference)
    for name in ("kind", "ts_event", "price", "size"):
        assert np.array_equal(ours[name], reference[name]), name
    quotes = reference["kind"] == Kind.QUOTE
    for name in ("price2", "size2"):
        assert np.array_equal(ours[name][quotes], reference[name][quotes]), name


class OfficialStream:
    """An alpaca-py data stream run in a thread of the test, recording what its handlers get."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.trades: list = []
        self.quotes: list = []
        self.bars: list = []
        self._thread = threading.Thread(target=stream.run, name="alpaca-py", daemon=True)

    def subscribe(self, *symbols: str) -> OfficialStream:
        async def on_trade(t):
            self.trades.append(t)

        async def on_quote(q):
            self.quotes.append(q)

        async def on_bar(b):
            self.bars.append(b)

        self.stream.subscribe_trades(on_trade, *symbols)
        self.stream.subscribe_quotes(on_quote, *symbols)
        self.stream.subscribe_bars(on_bar, *symbols)
        return self

    def __enter__(self) -> OfficialStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        wait_until(lambda: self.stream._loop is not None, 10, "alpaca-py's event loop")
        self.stream.stop()
        self._thread.join(15)
