"""The worker's latency histogram: ts_recv -> handed to the publisher, for every record.

One numba pass per batch counts each record into its bucket directly in the worker's slot of the
process table (`LATENCY_BOUNDS_NS`, Prometheus' inclusive ``le``), so the supervisor's metrics
endpoint reads it like any other counter. A scan from the smallest bucket, because nearly every
record falls in the first few: 3-5 % of the calculators' work on batches of 64-4096 records
(`benchmarks/bench_metrics.py`).
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.stats import LATENCY_BOUNDS_NS, ProcessSlot

__all__ = ["observe_latency", "warm_up"]


@numba.njit(cache=True, error_model="numpy")
def _count(ts_recv: np.ndarray, now: int, bounds: np.ndarray, counts: np.ndarray) -> float:
    """Add each record's latency to `counts`; return their sum in seconds (negative ones, from a
    clock step, count as 0)."""
    total = 0.0
    last = len(bounds)
    for i in range(len(ts_recv)):
        lat = now - ts_recv[i]
        if lat < 0:
            lat = 0
        total += lat
        k = 0
        while k < last and lat > bounds[k]:
            k += 1
        counts[k] += 1
    return total / 1e9


def observe_latency(slot: ProcessSlot, ts_recv: np.ndarray, now: int) -> None:
    """Count the latencies ``now - ts_recv`` (ns) of one batch into `slot`."""
    if len(ts_recv):
        slot.add("latency_sum_s", _count(ts_recv, now, LATENCY_BOUNDS_NS, slot.array("latency_counts")))


def warm_up() -> None:
    """Compile (or load) the kernel for what the worker passes: a ``ts_recv`` field view of a
    record batch, and a slot's counts."""
    from streamctl.shm.records import empty

    _count(empty(1)["ts_recv"], 0, LATENCY_BOUNDS_NS, np.zeros(len(LATENCY_BOUNDS_NS) + 1, dtype=np.uint64))
