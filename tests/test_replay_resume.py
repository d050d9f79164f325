"""A replay feed killed mid-file resumes where its rings stopped (issue 8, defect 3).

The rings' write counters survive the feed process: a restarted replay decodes its files again
from the start (an MBO book must see every record) and the feed loop drops, ring by ring, what
each ring already holds, so the rings end up with exactly the records of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import time

import msgspec
import numpy as np
import pytest
from _common import free_port, wait_until
from _data import sample

from streamctl.client import Subscriber
from streamctl.ingest.feed import FeedRuntime, FeedSpec
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file
from streamctl.ingest.vendor_api import EndOfInput, FeedConfig
from streamctl.ingest.vendors.replay.options import Options
from streamctl.ingest.vendors.replay.session import Session
from streamctl.shm.records import RECORD_DTYPE, Kind
from streamctl.shm.registry import SymbolRegistry
from streamctl.shm.ring import Ring
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import ProcessTable

pytestmark = pytest.mark.timeout(240)

TRADES = str(sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"))
MBO = str(sample("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"))


# ---- the feed loop and the replay session over real rings, registry and process table


class _Segments:
    """A registry, a process table and one ring per partition, removed even when a test fails."""

    def __init__(self, partitions: int):
        tag = f"t{os.getpid()}x{time.monotonic_ns() % 10**9}"
        self.names = {"registry": segment_name(tag, "sym"), "stats": segment_name(tag, "stats")}
        self.registry = SymbolRegistry.create(self.names["registry"], 64)
        self.table = ProcessTable.create(self.names["stats"], 1)
        self.rings = [Ring.create(segment_name(tag, "ring", str(p)), 1 << 16) for p in range(partitions)]

    def spec(self, files: list[str], batch: int) -> FeedSpec:
        feed = FeedConfig(name="rp", vendor="replay", options={"files": files, "batch": batch})
        return FeedSpec(plant="t", name="rp", slot=0, feed=feed, partitions=len(self.rings),
                        rings=[r.name for r in self.rings], registry=self.names["registry"],
                        stats=self.names["stats"], events_endpoint="")

    def runtime(self, spec: FeedSpec) -> FeedRuntime:
        return FeedRuntime(spec, registry=self.registry, rings=self.rings, slot=self.table.slot(0), publisher=None)

    def contents(self) -> list[np.ndarray]:
        """Everything each ring holds (this test is its only consumer)."""
        return [ring.consume(1 << 16).copy() for ring in self.rings]

    def close(self) -> None:
        for view in (*self.rings, self.registry, self.table):
            view.close()
            view.unlink()


def _session(spec: FeedSpec, runtime: FeedRuntime) -> Session:
    session = Session(msgspec.convert(spec.feed.options, Options), spec.feed, runtime)
    session.open()
    return session


def _route_all(session: Session, runtime: FeedRuntime, *, limit: int | None = None) -> int:
    """Route batches until the input ends (or `limit` batches); how many were routed."""
    routed = 0
    deadline = time.monotonic() + 180
    while limit is None or routed < limit:
        assert time.monotonic() < deadline, "replay did not finish within 180 s (a fresh checkout compiles the kernels first)"
        try:
            batch = session.poll(0.05)
        except EndOfInput:
            break
        if batch is not None and len(batch):
            runtime.route(batch, lambda: False)
            routed += 1
    return routed


@pytest.mark.parametrize("cut", [0, 1, 700], ids=["between-batches", "one-record-in", "mid-batch"])
def test_restarted_replay_fills_the_rings_exactly_once(cut):
    """Two partitions (ESU4 trades -> 0, the ESM4 MBO book -> 1); the first run dies after
    some batches and part of the next one (`cut` records of it reached the rings)."""
    files = [MBO, TRADES]
    reference, crashed = _Segments(2), _Segments(2)
    try:
        spec = reference.spec(files, batch=1000)
        runtime = reference.runtime(spec)
        _route_all(_session(spec, runtime), runtime)
        want = reference.contents()
        assert [len(w) > 100 for w in want] == [True, True]

        spec = crashed.spec(files, batch=1000)
        first = crashed.runtime(spec)
        session = _session(spec, first)
        assert _route_all(session, first, limit=5) == 5  # past the book snapshot, inside the MBO file
        batch = session.poll(0.05)
        assert batch is not None and len(batch) > cut
        first.route(batch[:cut], lambda: False)  # the kill lands inside this batch
        session.close()

        again = crashed.runtime(spec)  # a new feed process: same rings, registry and slot
        session = _session(spec, again)
        again.resume(session)
        _route_all(session, again)
        got = crashed.contents()
        for p in range(2):
            assert got[p].dtype == RECORD_DTYPE and np.array_equal(got[p], want[p]), f"partition {p}"
        assert again._delivered is None  # every record delivered before the restart was found again
    finally:
        reference.close()
        crashed.close()


def test_resume_hands_the_delivered_records_out_unpaced():
    """At 1e-6 x real time only the first instant is due; a resumed session first hands out
    everything delivered before the restart, at once."""
    segments = _Segments(1)
    try:
        spec = segments.spec([TRADES], batch=4096)
        spec = msgspec.structs.replace(spec, feed=msgspec.structs.replace(
            spec.feed, options={"files": [TRADES], "speed": 1e-6}))
        runtime = segments.runtime(spec)
        session = _session(spec, runtime)
        session.resume(100)
        t0 = time.monotonic()
        first = session.poll(0.05)
        assert first is not None and len(first) == 100 and time.monotonic() - t0 < 5
        after = session.poll(0.05)  # pacing starts again at record 100: it is due at once
        assert after is not None and len(after) >= 1
        session.close()
    finally:
        segments.close()


# ---- the whole plant: SIGKILL of the replay feed under `streamctl up`


def _file_trades(path: str) -> list[tuple[int, float, float]]:
    decoder = DbnDecoder()
    decoder.write(read_file(path))
    records = decoder.finish().records
    trades = records[records["kind"] == Kind.TRADE]
    return [(int(r["ts_event"]), int(r["price"]) / 1e9, float(r["size"])) for r in trades]


def test_kill_9_of_a_replay_feed_resumes_without_duplicates(plant):  # `plant`: conftest.py
    name = f"rsm{os.getpid() % 100000}"
    port = free_port()
    # 120 trades over 232 s of event time at 15x: about 15 s of replay.
    config = plant.write_config(name, f"""\
name: {name}
feeds:
  - name: rp
    vendor: replay
    options: {{files: ["{TRADES}"], speed: 15}}
publish: {{endpoint: "tcp://127.0.0.1:{port}", raw_trades: true}}
""")
    want = _file_trades(TRADES)
    got: list[tuple[int, float, float]] = []
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    try:
        sub.on_trade(lambda t: got.append((t.ts_event, t.price, t.size)))
        sub.subscribe("trade.")
        plant.run("up", str(config), "--detach", check=True)
        wait_until(lambda: len(got) >= 12, 60, "a dozen trades", step=lambda: sub.poll(0.05))
        feed = plant.process(name, "rp")
        assert feed["state"] == "ready" and feed["records_in"] < len(want), feed
        os.kill(feed["pid"], signal.SIGKILL)
        wait_until(lambda: got and got[-1] == want[-1] and plant.process(name, "rp")["state"] == "exited",
                   90, "the last trade of the file and the feed to finish", step=lambda: sub.poll(0.2))
        after = plant.process(name, "rp")
    finally:
        sub.close()
    assert after["restarts"] == 1 and after["pid"] != feed["pid"]
    # The subscription may have begun after the first trades: what came is the file's tail, each once.
    assert any(got == want[start:] for start in range(len(want))), (len(got), got[:3])
