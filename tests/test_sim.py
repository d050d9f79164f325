"""The simulator's session: seeded, simulated-clock batches, each record a whole event."""

from __future__ import annotations

import time

import numpy as np

from streamctl.ingest.vendor_api import FeedConfig
from streamctl.ingest.vendors.sim.options import Options
from streamctl.ingest.vendors.sim.session import Session
from streamctl.shm.records import Flag, Kind


class _Ctx:
    feed_name = "sim"

    def instrument_id(self, symbol: str) -> int:
        return ["AAPL", "MSFT"].index(symbol) + 1


def test_simulated_batches_are_deterministic_and_every_record_closes_its_event():
    def batches() -> np.ndarray:
        opt = Options(rate=1000.0, clock="simulated", batch=256, seed=7)
        session = Session(opt, FeedConfig(name="sim", vendor="sim", symbols=["AAPL", "MSFT"]), _Ctx())
        session.open()
        out = np.concatenate([session.poll(0.0) for _ in range(4)])
        session.close()
        return out

    first, second = batches(), batches()
    assert len(first) == 1024 and first.tobytes() == second.tobytes()
    assert np.all(first["flags"] & Flag.LAST)
    assert set(np.unique(first["kind"]).tolist()) <= {Kind.TRADE, Kind.QUOTE, Kind.BOOK}
    assert np.all(np.diff(first["ts_event"]) >= 0)


def test_wall_clock_events_are_handed_over_once_per_slice():
    """At 4 k events/s with 20 ms slices each hand-over carries the ~80 events due since the last,
    never two hand-overs within one slice (a 100 k/s feed is not 100 k wake-ups). A loaded
    machine only makes hand-overs rarer and larger, so the bounds below hold whatever the load."""
    opt = Options(rate=2000.0, slice_ms=20.0, seed=7)
    session = Session(opt, FeedConfig(name="sim", vendor="sim", symbols=["AAPL", "MSFT"]), _Ctx())
    start = time.monotonic()
    session.open()
    batches = []
    while len(batches) < 6:
        batch = session.poll(0.05)
        if batch is not None:
            batches.append(batch)
    elapsed = time.monotonic() - start
    session.close()
    assert len(batches) <= elapsed / 0.020 + 1
    assert all(np.all(b["ts_recv"] == b["ts_recv"][0]) for b in batches)
    assert sum(len(b) for b in batches[1:]) >= 5 * 40  # many events per hand-over, not one
    assert np.all(np.diff(np.concatenate([b["ts_event"] for b in batches])) >= 0)


def test_wall_clock_slices_spread_times_since_the_last_and_keep_the_seeds_events():
    """Each hand-over's events are stamped in one pass: times spread over (the previous hand-over,
    now], the last one now, each record closing its event; what the events are (symbols, kinds,
    prices, sizes, sequence) stays the seed's, as the generator alone produces them."""
    from streamctl.ingest.vendors.sim.generator import SimGenerator

    opt = Options(rate=2000.0, slice_ms=5.0, seed=11)
    symbols = ["AAPL", "MSFT"]
    session = Session(opt, FeedConfig(name="sim", vendor="sim", symbols=symbols), _Ctx())
    session.open()
    batches: list[np.ndarray] = []
    while len(batches) < 8:
        batch = session.poll(0.05)
        if batch is not None:
            batches.append(batch.copy())
    session.close()
    for before, batch in zip(batches, batches[1:], strict=False):
        times = batch["ts_event"]
        assert times[-1] == batch["ts_recv"][0] and np.all(times > before["ts_recv"][0])
        assert np.all(np.diff(times) >= 0)
    events = np.concatenate(batches)
    assert np.all(events["flags"] & Flag.LAST)
    alone = SimGenerator(opt, symbols, [_Ctx().instrument_id(s) for s in symbols]).take(len(events))
    for field in ("instrument_id", "kind", "side", "price", "price2", "size", "size2", "sequence"):
        assert np.array_equal(events[field], alone[field]), field
