"""The whole plant on real data: the ESM4 MBO sample (13,796 records) replayed in a loop.

Runs a real plant (replay feed -> ring -> one worker with the demo calculators -> hub) for a
few seconds and reads the plant's own counters:

- ``drop`` rings: the feed is never held back, so its rate is what one ingest process
  (DBN decode + MBO book + routing) puts into the ring; the worker's rate is what one worker
  gets through (the rest is counted as overflow);
- ``block`` rings: the feed waits for the worker, so the feed rate is the plant's end-to-end
  throughput.

    python benchmarks/bench_plant.py [--quick]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from _table import bench_main

from streamctl.cli.config import parse_config
from streamctl.cli.supervisor import Supervisor

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MBO = DATA / "nautilus_trader" / "order_book_deltas_catalog" / "orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"


def measure(overflow: str, seconds: float, raw: bool) -> dict[str, float]:
    cfg = parse_config(f"""
name: bp{os.getpid() % 100000}
feeds:
  - {{name: mbo, vendor: replay, options: {{files: ["{MBO}"], loop: true, speed: max}}}}
partitions: {{count: 1}}
calculators:
  bars: {{time: [1s, 60s], ticks: [100], volume: [500]}}
  vwap: {{rolling_window: 100}}
  ema: [12]
  anomalies: {{zscore: {{window: 100, threshold: 5.0}}}}
  book: {{depth: 5}}
publish: {{endpoint: "ipc:///tmp/streamctl-bench-{os.getpid()}.sock", raw_trades: {str(raw).lower()},
          raw_quotes: {str(raw).lower()}}}
rings: {{capacity: 1048576, overflow: {overflow}}}
""")
    sup = Supervisor(cfg)
    sup.start()
    try:
        def counts() -> dict[str, int]:
            return {p["name"]: p["records_in"] for p in sup.status()["processes"]}

        warm_end = time.monotonic() + 1.0
        while time.monotonic() < warm_end:
            sup.step()
            time.sleep(0.05)
        first, t0 = counts(), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            sup.step()
            time.sleep(0.05)
        last, t1 = counts(), time.monotonic()
    finally:
        sup.stop()
    elapsed = t1 - t0
    return {name: (last[name] - first[name]) / elapsed for name in ("mbo", "worker-0")}


def run(quick: bool = False) -> list[dict]:
    if not MBO.exists():
        return [{"benchmark": "plant on real MBO", "value": "skipped", "unit": "", "note": "no sample data in tests/data"}]
    seconds = 3.0 if quick else 8.0
    drop = measure("drop", seconds, raw=False)
    block = measure("block", seconds, raw=False)
    note = "ESM4 MBO sample looped; 1 feed, 1 worker, demo-like calculators, raw topics off"
    return [
        {"benchmark": "replay feed -> ring (one ingest process)", "value": round(drop["mbo"] / 1e6, 2),
         "unit": "M rec/s", "note": note + "; drop rings"},
        {"benchmark": "worker on real MBO (one worker)", "value": round(drop["worker-0"] / 1e6, 2),
         "unit": "M rec/s", "note": "same run"},
        {"benchmark": "whole plant end to end", "value": round(block["mbo"] / 1e6, 2), "unit": "M rec/s",
         "note": note + "; block rings"},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
