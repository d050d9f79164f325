"""What the plant pays for being watched: the worker's latency histogram, and one Prometheus scrape.

1. `observe_latency` (the worker's per-batch ts_recv -> publish histogram, a numba pass counting
   into its slot of the process table) on batches of 1 / 64 / 1024 / 4096 records, beside the anchor: the
   worker's own calculators (`CalculatorSet.on_batch`, the full set of `bench_worker`) on the same
   batch. The note gives the histogram's share of the worker's work.
2. One scrape of the supervisor's endpoint content: `families` of a 64-process status snapshot,
   rendered by `prometheus_client`'s text exposition (the work the supervisor's thread does).

Medians of repeated calls. Run: ``python benchmarks/bench_metrics.py [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from _table import bench_main
from bench_worker import FULL_CONFIG, make_ticks

from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.latency import observe_latency, warm_up
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import ProcessTable

__all__ = ["run"]


def _median_ns(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def _status(processes: int) -> dict:
    rows = []
    for i in range(processes):
        rows.append({"name": f"worker-{i}", "role": "worker", "records_in": 10**9 + i, "records_out": 10**9,
                     "drops": {"overflow": 0, "malformed": 1, "late": 2, "gaps": 0}, "restarts": 0, "state": "ready",
                     "alive": True, "ring_fill": 0.01, "consumer_lag": 10, "rss": 10**8, "uss": 10**7, "pss": 5 * 10**7,
                     "cpu_seconds": 12.5, "reconnects": 0, "errors": 0,
                     "latency": {"bounds_ns": list(range(12)), "counts": [i] * 13, "sum_s": 1.5}})
    return {"plant": "bench", "processes": rows}


def run(quick: bool = False) -> list[dict]:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from streamctl.cli.metrics import PlantCollector

    repeats = 50 if quick else 300
    rows = []
    plant = f"bm{os.getpid() % 100000}"
    table = ProcessTable.create(segment_name(plant, "stats"), 1, plant=plant)
    try:
        slot = table.slot(0)
        records, sym = make_ticks(8192)
        calc = CalculatorSet(FULL_CONFIG, src="bench", live=True)
        local = np.array([calc.add_symbol(f"S{s}") for s in range(int(sym.max()) + 1)], dtype=np.int32)
        calc.on_batch(records, local[sym])  # warm (kernels compiled or loaded)
        warm_up()
        records["ts_recv"] = time.time_ns() - 200_000  # a live plant's few hundred us (bucket 4 of 13)
        for size in (1, 64, 1024, 4096):
            batch, idx = records[:size], local[sym[:size]]
            hist = _median_ns(lambda b=batch: observe_latency(slot, b["ts_recv"], time.time_ns()), repeats)
            work = _median_ns(lambda b=batch, i=idx: calc.on_batch(b, i), repeats)
            rows.append({"benchmark": f"latency histogram, batch {size}", "value": hist / 1000, "unit": "us/batch",
                         "note": f"calculators on the same batch: {work / 1000:,.1f} us ({100 * hist / work:.1f} %)"})
    finally:
        table.close()
        table.unlink()
    registry = CollectorRegistry(auto_describe=False)
    status = _status(64)
    registry.register(PlantCollector(lambda: status))
    scrape = _median_ns(lambda: generate_latest(registry), max(repeats // 10, 10))
    rows.append({"benchmark": "one scrape, 64 processes", "value": scrape / 1e6, "unit": "ms",
                 "note": f"{len(generate_latest(registry)):,} bytes of text"})
    return rows


if __name__ == "__main__":
    raise SystemExit(bench_main(run, __doc__))
