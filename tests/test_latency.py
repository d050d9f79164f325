"""The worker's latency histogram kernel, counted into a real process-table slot."""

from __future__ import annotations

import numpy as np
import pytest
from _shmutil import no_leaks, unique_plant

from streamctl.process.latency import observe_latency
from streamctl.shm.records import empty
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import LATENCY_BOUNDS_NS, ProcessTable


@pytest.fixture
def slot():
    with no_leaks(unique_plant("lat")) as plant:
        table = ProcessTable.create(segment_name(plant, "stats"), 1, plant=plant)
        try:
            yield table.slot(0)
        finally:
            table.close()
            table.unlink()


def _batch(ts_recv: list[int]) -> np.ndarray:
    batch = empty(len(ts_recv))
    batch["ts_recv"] = ts_recv
    return batch


def test_each_record_lands_in_its_bucket_and_the_sum(slot):
    now = 10**18
    # On a bound (inclusive, like Prometheus' `le`), just past it, past the last bound, and from the
    # future (a clock step: counted as 0, in the first bucket).
    observe_latency(slot, _batch([now - 25_000, now - 25_001, now - 2 * 10**9, now + 5])["ts_recv"], now)
    observe_latency(slot, _batch([])["ts_recv"], now)
    counts = slot.snapshot()["latency_counts"]
    assert len(counts) == len(LATENCY_BOUNDS_NS) + 1
    assert counts[0] == 2 and counts[1] == 1 and counts[-1] == 1 and sum(counts) == 4
    assert slot.get("latency_sum_s") == pytest.approx((25_000 + 25_001 + 2 * 10**9) / 1e9)


def test_matches_numpy_on_random_latencies(slot):
    rng = np.random.default_rng(3)
    now = 10**18
    lat = rng.integers(0, 3 * 10**9, 5000)
    observe_latency(slot, _batch(list(now - lat))["ts_recv"], now)
    expected = np.bincount(np.searchsorted(LATENCY_BOUNDS_NS, lat, side="left"), minlength=len(LATENCY_BOUNDS_NS) + 1)
    assert slot.snapshot()["latency_counts"] == list(expected)
    # Years of "latency" (a recorded ts_recv) in a big batch: a float sum, never an overflow.
    observe_latency(slot, _batch([0] * 4096)["ts_recv"], now)
    assert slot.snapshot()["latency_counts"][-1] == expected[-1] + 4096
