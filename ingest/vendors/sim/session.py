"""The built-in simulator: a market to start the plant with, no account and no network.

Each symbol's mid price follows a geometric Brownian motion, one step per event; events are
a configurable mix of trades, top-of-book quotes and price-level book updates, on a tick
grid. Generation is vectorized in fixed-size chunks drawn from one seeded generator, so the
sequence of events (symbols, kinds, prices, sizes) depends only on the seed and the config,
never on timing; with ``clock: simulated`` the timestamps are deterministic too.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from streamctl.ingest.vendor_api import FeedContext
from streamctl.ingest.vendors.sim.generator import SimGenerator
from streamctl.ingest.vendors.sim.options import Options
from streamctl.shm.records import Flag

__all__ = ["Session", "warm_up"]

_LAST = np.uint8(Flag.LAST)


@numba.njit(cache=True, nogil=True)
def _stamp(batch: np.ndarray, last_ns: int, now: int) -> None:
    """Spread the events' times over (last_ns, now], stamp them received now and mark each one
    record: one compiled pass, where the numpy form took a dozen small-array calls per slice.
    Event i of n gets last_ns + trunc((i + 1) / n * (now - last_ns)) in float64, as before."""
    n = batch.shape[0]
    span = float(now - last_ns)
    for i in range(n):
        rec = batch[i]
        rec.ts_event = last_ns + np.int64((i + 1) / n * span)
        rec.ts_recv = now
        rec.flags |= _LAST


def warm_up() -> None:
    """Compile (or load from cache) the stamping kernel before the feed says READY."""
    from streamctl.shm.records import empty

    _stamp(empty(1), 0, 1)


class Session:
    """Paces the generator out in real time (or as fast as possible, or on a simulated clock)."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._symbols = list(feed.symbols or [])
        self._ctx = ctx
        self._gen: SimGenerator | None = None
        self._ids: list[int] = []
        self._emitted = 0
        self._t0 = 0.0
        self._next_slice = 0.0
        self._last_ns = 0

    # ---- FeedSession face
    def open(self) -> None:
        self._ids = [self._ctx.instrument_id(s) for s in self._symbols]
        self._gen = SimGenerator(self._opt, self._symbols, self._ids)
        self._t0 = time.monotonic()
        self._next_slice = 0.0
        self._last_ns = time.time_ns()
        self._emitted = 0

    def poll(self, timeout: float) -> np.ndarray | None:
        assert self._gen is not None, "open() first"
        opt = self._opt
        if opt.clock == "simulated":
            return self._simulated()
        if opt.rate == "max":
            n = opt.batch
        else:
            n = self._due(opt.rate * len(self._symbols), timeout)
            if n < 1:
                return None
        batch = self._gen.take(n)
        now = time.time_ns()
        _stamp(batch, self._last_ns, now)  # times spread since the last batch: bars see a steady flow
        self._last_ns = now
        self._emitted += n
        return batch

    def close(self) -> None:
        self._gen = None

    def instruments(self) -> list[int]:
        """Ids of the configured symbols (all of them produce events)."""
        return list(self._ids)

    # ---- internals
    def _due(self, total_rate: float, timeout: float) -> int:
        """Events to hand over now: none before the current slice ends, then all those due."""
        elapsed = time.monotonic() - self._t0
        ready_at = max((self._emitted + 1) / total_rate, self._next_slice)
        if elapsed < ready_at:
            time.sleep(min(ready_at - elapsed, timeout))
            elapsed = time.monotonic() - self._t0
            if elapsed < ready_at:
                return 0
        self._next_slice = elapsed + self._opt.slice_ms * 1e-3
        return min(int(elapsed * total_rate) - self._emitted, self._opt.batch)

    def _simulated(self) -> np.ndarray:
        opt = self._opt
        n = opt.batch
        batch = self._gen.take(n)  # type: ignore[union-attr]
        step_ns = 1e9 / (float(opt.rate) * max(len(self._symbols), 1))
        index = np.arange(self._emitted, self._emitted + n, dtype=np.float64)
        batch["ts_event"] = opt.start_ns + np.floor(index * step_ns).astype(np.int64)
        batch["ts_recv"] = batch["ts_event"]
        batch["flags"] |= _LAST
        self._emitted += n
        return batch
