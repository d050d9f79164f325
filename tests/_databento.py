"""Shared pieces of the Databento tests: sample files, a recording FeedContext, venues."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from streamctl.ingest.vendors.databento.options import Options
from streamctl.ingest.vendors.databento.session import Session
from streamctl.ingest.vendors.databento.venue import DatabentoVenue

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEY = "db-" + "A" * 27 + "ABCDE"

ESU4_TRADES = "nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_MBP1 = "nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESM4_MBO = "nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"
ESH1_TRADES_V3 = "databento-python/GLBX.MDP3/test_data.trades.dbn.zst"
ESH1_MBP1_V3 = "databento-python/GLBX.MDP3/test_data.mbp-1.dbn.zst"
ESH1_MBO_V3 = "databento-dbn/test_data.mbo.v3.dbn"
ESH1_TRADES_V2 = "databento-dbn/test_data.trades.dbn"
NVDA_TRADES_V3 = "databento-python/XNAS.ITCH/test_data.trades.dbn.zst"
LIVE_V3 = "databento-python/LIVE/test_data.live.dbn.zst"


def sample(rel: str) -> str:
    """Absolute path of a shared sample file; skips the test when the data is absent."""
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"sample data not found: {path}")
    return str(path)


class Ctx:
    """A FeedContext that records what a session reports and hands out dense ids."""

    feed_name = "db"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.events: list[tuple[str, str, int | None]] = []

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids))

    def count(self, cause: str, n: int = 1) -> None:
        self.counts[cause] += n

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        self.events.append((kind, message, code))

    def progress(self, done: float, total: float) -> None:
        pass

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]

    def reset_records(self, ids: list[int]) -> np.ndarray:
        from streamctl.shm.records import RECORD_DTYPE, Kind

        out = np.zeros(len(ids), RECORD_DTYPE)
        out["instrument_id"] = ids
        out["kind"] = Kind.RESET
        return out


class Venues:
    """Starts venues for a test and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[DatabentoVenue] = []

    def start(self, files: list[str], **kwargs) -> DatabentoVenue:
        venue = DatabentoVenue(files, **kwargs)
        self.started.append(venue)
        venue.start()
        return venue

    def stop_all(self) -> None:
        for venue in self.started:
            venue.stop()


@pytest.fixture(name="venues")
def venues_fixture() -> Iterator[Venues]:
    """The ``venues`` fixture: venues a test starts, every one stopped at teardown (a module
    imports `venues_fixture` to use it)."""
    started = Venues()
    try:
        yield started
    finally:
        started.stop_all()


def options(port: int, **overrides) -> Options:
    raw = {"dataset": "GLBX.MDP3", "schemas": ["trades"], "key": KEY, "gateway": "127.0.0.1", "port": port}
    raw.update(overrides)
    return msgspec.convert(raw, Options)


def feed(*symbols: str) -> SimpleNamespace:
    return SimpleNamespace(name="db", symbols=list(symbols))


def collect(session, until, *, timeout: float = 10.0) -> np.ndarray:
    """Poll `session` until ``until(records_so_far)`` holds; fails the test after `timeout` s."""
    from streamctl.shm.records import RECORD_DTYPE

    parts: list[np.ndarray] = []
    got = np.empty(0, RECORD_DTYPE)
    deadline = time.monotonic() + timeout
    while not until(got):
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s; {len(got)} records so far")
        batch = session.poll(0.05)
        if batch is not None and len(batch):
            parts.append(batch.copy())
            got = np.concatenate(parts)
    return got


def wait_for(predicate, *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.01)


def open_session(port: int, *symbols: str, ctx: Ctx | None = None, **overrides) -> tuple[Session, Ctx]:
    ctx = ctx or Ctx()
    session = Session(options(port, **overrides), feed(*symbols), ctx)
    session.open()
    return session, ctx
