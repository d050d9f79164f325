"""The built-in simulator: a market to start the plant with, no account and no network.

Each symbol's mid price follows a geometric Brownian motion, one step per event; events are
a configurable mix of trades, top-of-book quotes and price-level book updates, on a tick
grid. Generation is vectorized in fixed-size chunks drawn from one seeded generator, so the
sequence of events (symbols, kinds, prices, sizes) depends only on the seed and the config,
never on timing; with ``clock: simulated`` the timestamps are deterministic too.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
import numpy as np
from msgspec import Meta

from streamctl.ingest.session import FeedContext
from streamctl.shm.records import PRICE_SCALE, RECORD_DTYPE, Flag, Kind, Side

__all__ = ["Options", "Session", "SimGenerator"]

_CHUNK = 512
_DEFAULT_START_NS = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z


class Options(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    rate: Annotated[float, Meta(gt=0)] | Literal["max"] = 200.0
    """Events per second per symbol, or ``max`` (as fast as the ring takes them)."""
    seed: int = 42
    prices: dict[str, Annotated[float, Meta(gt=0)]] = {}
    """Start price per symbol; symbols not listed start at ``start_price``."""
    start_price: Annotated[float, Meta(gt=0)] = 100.0
    step_bps: Annotated[float, Meta(ge=0)] = 1.0
    """Standard deviation of one event's log-price step, in basis points."""
    tick_size: Annotated[float, Meta(gt=0)] = 0.01
    trade_share: Annotated[float, Meta(ge=0, le=1)] = 0.4
    quote_share: Annotated[float, Meta(ge=0, le=1)] = 0.4
    """The rest of the events are book updates."""
    max_size: Annotated[int, Meta(ge=1)] = 500
    """Trade and level sizes are uniform in 1..max_size."""
    jump_prob: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """Probability that an event's step is a jump of ``jump_bps`` (to exercise anomaly rules)."""
    jump_bps: Annotated[float, Meta(ge=0)] = 800.0
    batch: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096
    """Most events handed to the ring at once."""
    clock: Literal["wall", "simulated"] = "wall"
    """``wall``: events are stamped with the current time as they are paced out. ``simulated``:
    event time advances by 1/rate per event (from ``start_ns``) and nothing waits."""
    start_ns: int = _DEFAULT_START_NS

    def check(self) -> tuple[str, str, object] | None:
        if self.trade_share + self.quote_share > 1:
            return "trade_share", "plus `quote_share` must be <= 1", self.trade_share
        if self.clock == "simulated" and self.rate == "max":
            return "rate", "must be a number when `clock` is simulated", self.rate
        return None


class SimGenerator:
    """Deterministic event generator (no timing): ``take(n)`` returns the next `n` events."""

    def __init__(self, options: Options, symbols: list[str], instrument_ids: list[int]):
        self._opt = options
        self._rng = np.random.default_rng(options.seed)
        self._ids = np.asarray(instrument_ids, dtype=np.uint32)
        start = [options.prices.get(s, options.start_price) for s in symbols]
        self._log_mid = np.log(np.asarray(start, dtype=np.float64))
        self._tick = int(round(options.tick_size * PRICE_SCALE))
        self._sigma = options.step_bps * 1e-4
        self._buffer = np.zeros(0, dtype=RECORD_DTYPE)
        self._sequence = 0

    def take(self, n: int) -> np.ndarray:
        while len(self._buffer) < n:
            self._buffer = np.concatenate([self._buffer, self._chunk()])
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out.copy()

    def _chunk(self) -> np.ndarray:
        opt, rng, n = self._opt, self._rng, _CHUNK
        nsym = len(self._ids)
        sym = rng.integers(0, nsym, n)
        u_kind = rng.random(n)
        steps = rng.standard_normal(n) * self._sigma - 0.5 * self._sigma**2
        if opt.jump_prob > 0:
            jumps = rng.random(n) < opt.jump_prob
            signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
            steps = np.where(jumps, signs * opt.jump_bps * 1e-4, steps)
        spread = rng.integers(1, 4, n)
        size_a = rng.integers(1, opt.max_size + 1, n).astype(np.float64)
        size_b = rng.integers(1, opt.max_size + 1, n).astype(np.float64)
        u_side = rng.random(n)
        level = rng.integers(0, 5, n)
        u_remove = rng.random(n)

        # Per-symbol cumulative log-price path, in event order, without a per-event loop.
        order = np.argsort(sym, kind="stable")
        sorted_sym = sym[order]
        csum = np.cumsum(steps[order])
        starts = np.searchsorted(sorted_sym, np.arange(nsym), side="left")
        ends = np.searchsorted(sorted_sym, np.arange(nsym), side="right")
        base = np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0.0)
        path_sorted = csum - base[sorted_sym] + self._log_mid[sorted_sym]
        log_mid = np.empty(n)
        log_mid[order] = path_sorted
        has = ends > starts
        self._log_mid[has] = path_sorted[ends[has] - 1]

        mid_ticks = np.maximum(np.rint(np.exp(log_mid) / self._opt.tick_size).astype(np.int64), 4)
        bid = mid_ticks - spread // 2
        ask = bid + spread
        rec = np.zeros(n, dtype=RECORD_DTYPE)
        rec["instrument_id"] = self._ids[sym]
        is_trade = u_kind < opt.trade_share
        is_quote = (~is_trade) & (u_kind < opt.trade_share + opt.quote_share)
        is_book = ~(is_trade | is_quote)
        buy = u_side < 0.5
        rec["kind"] = np.where(is_trade, Kind.TRADE, np.where(is_quote, Kind.QUOTE, Kind.BOOK))
        rec["side"] = np.where(buy, Side.BID, Side.ASK)
        trade_px = np.where(buy, ask, bid)
        book_px = np.where(buy, bid - level, ask + level)
        rec["price"] = np.where(is_trade, trade_px, np.where(is_quote, bid, book_px)) * self._tick
        rec["price2"] = np.where(is_quote, ask * self._tick, 0)
        rec["size"] = np.where(is_book & (u_remove < 0.1), 0.0, size_a)
        rec["size2"] = np.where(is_quote, size_b, 0.0)
        rec["sequence"] = np.arange(self._sequence + 1, self._sequence + n + 1, dtype=np.uint64)
        self._sequence += n
        return rec


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
        self._last_ns = 0

    def open(self) -> None:
        self._ids = [self._ctx.instrument_id(s) for s in self._symbols]
        self._gen = SimGenerator(self._opt, self._symbols, self._ids)
        self._t0 = time.monotonic()
        self._last_ns = time.time_ns()
        self._emitted = 0

    def instruments(self) -> list[int]:
        return list(self._ids)

    def close(self) -> None:
        self._gen = None

    def poll(self, timeout: float) -> np.ndarray | None:
        assert self._gen is not None, "open() first"
        opt = self._opt
        if opt.clock == "simulated":
            return self._simulated()
        if opt.rate == "max":
            n = opt.batch
        else:
            total_rate = opt.rate * len(self._symbols)
            due = int((time.monotonic() - self._t0) * total_rate) - self._emitted
            if due < 1:
                wait = (self._emitted + 1) / total_rate - (time.monotonic() - self._t0)
                time.sleep(min(max(wait, 0.0), timeout))
                due = int((time.monotonic() - self._t0) * total_rate) - self._emitted
                if due < 1:
                    return None
            n = min(due, opt.batch)
        batch = self._gen.take(n)
        now = time.time_ns()
        # Spread event times over the interval since the last batch, so bars see a steady flow.
        frac = np.arange(1, n + 1, dtype=np.float64) / n
        batch["ts_event"] = self._last_ns + (frac * (now - self._last_ns)).astype(np.int64)
        batch["ts_recv"] = now
        batch["flags"][-1] |= Flag.LAST
        self._last_ns = now
        self._emitted += n
        return batch

    def _simulated(self) -> np.ndarray:
        opt = self._opt
        n = opt.batch
        batch = self._gen.take(n)  # type: ignore[union-attr]
        step_ns = 1e9 / (float(opt.rate) * max(len(self._symbols), 1))
        index = np.arange(self._emitted, self._emitted + n, dtype=np.float64)
        batch["ts_event"] = opt.start_ns + np.floor(index * step_ns).astype(np.int64)
        batch["ts_recv"] = batch["ts_event"]
        batch["flags"][-1] |= Flag.LAST
        self._emitted += n
        return batch

