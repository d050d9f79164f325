"""The simulator's session: seeded, simulated-clock batches, each record a whole event."""

from __future__ import annotations

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
