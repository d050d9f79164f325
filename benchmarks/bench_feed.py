"""The feed process's CPU per slice: the simulator at 10 k trades/s over 5 symbols, routed to a ring.

The loop is the feed's (`streamctl.ingest.feed.run_feed`): heartbeat, `poll` (1 ms slices of ~10
records), ring heartbeat, `route` (screen, partition, publish, doorbell) into a real ring that a
consumer in another process drains, sleeping on the ring's doorbell (so every slice pays the
futex wake a live plant pays). The anchor, in the same run, is the same loop shape handing over
nothing: one wake per 1 ms slice, the floor of any feed paced in slices.

    python benchmarks/bench_feed.py [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import msgspec
from _table import bench_main

from streamctl.ingest.feed import FeedRuntime, FeedSpec
from streamctl.ingest.vendor_api import FeedConfig
from streamctl.ingest.vendors.sim.options import Options
from streamctl.ingest.vendors.sim.session import Session
from streamctl.shm.registry import SymbolRegistry
from streamctl.shm.ring import Ring, wait_for_records
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import ProcessTable

_RATE = 10_000
_SYMBOLS = [f"S{i:02d}" for i in range(5)]


def _drain(ring_name: str, stop) -> None:
    """The consumer: sleep on the doorbell, take what is there (a worker's shape, minus the work)."""
    ring = Ring.attach(ring_name)
    ring.consumer_attached()
    while not stop.is_set():
        wait_for_records([ring], 0.05)
        ring.consume(4096)
    ring.close()


def _feed_loop(seconds: float, *, records: bool) -> tuple[float, int, int]:
    """(CPU seconds of this process, slices, records) over `seconds` of the feed's loop."""
    plant = f"bf{os.getpid() % 100000}"
    registry = SymbolRegistry.create(segment_name(plant, "sym", "f"), 16, plant=plant)
    ring = Ring.create(segment_name(plant, "ring", "f_p0"), 1 << 16, plant=plant)
    table = ProcessTable.create(segment_name(plant, "stats"), 1, plant=plant)
    stop = mp.get_context("spawn").Event()
    consumer = mp.get_context("spawn").Process(target=_drain, args=(ring.name, stop))
    consumer.start()
    try:
        feed = FeedConfig(name="f", vendor="sim", symbols=_SYMBOLS,
                          options={"rate": _RATE / len(_SYMBOLS), "trade_share": 1.0, "quote_share": 0.0})
        spec = FeedSpec(plant=plant, name="f", slot=0, feed=feed, partitions=1, rings=[ring.name],
                        registry=registry.name, stats=table.name, events_endpoint="")
        slot = table.slot(0)
        runtime = FeedRuntime(spec, registry=registry, rings=[ring], slot=slot, publisher=None)
        session = Session(msgspec.convert(feed.options, Options), feed, runtime)
        session.open()

        def should_stop() -> bool:
            slot.heartbeat()
            return False

        slices = total = 0
        for measured in (False, True):  # a second of warm-up, then the measurement
            end = time.monotonic() + (seconds if measured else 1.0)
            cpu = time.process_time()
            while not should_stop() and time.monotonic() < end:
                if records:
                    batch = session.poll(0.05)
                else:
                    time.sleep(1e-3)  # the anchor: one 1 ms slice with nothing in it
                    batch = None
                ring.heartbeat()
                if batch is not None and len(batch):
                    runtime.route(batch, should_stop)
                    total += len(batch) if measured else 0
                slices += measured and (batch is not None or not records)
            cpu = time.process_time() - cpu
    finally:
        stop.set()
        consumer.join(10)
        for segment in (registry, ring, table):
            segment.close()
            segment.unlink()
    return cpu, slices, total


def run(quick: bool = False) -> list[dict]:
    seconds = 3.0 if quick else 8.0
    rows = []
    for name, records in (("feed loop, sim 10 k trades/s", True), ("anchor: the loop's 1 ms wake alone", False)):
        cpu, slices, total = _feed_loop(seconds, records=records)
        note = f"{slices} slices, {total} records in {seconds:.0f} s; {100 * cpu / seconds:.1f} % of a core"
        rows.append({"benchmark": f"{name}, CPU per slice", "value": round(1e6 * cpu / max(slices, 1), 1),
                     "unit": "us", "note": note})
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
