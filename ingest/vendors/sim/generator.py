"""The simulator's market: seeded, vectorized GBM events (trades, quotes, book levels).

Each symbol's mid price follows a geometric Brownian motion, one step per event; events are
a configurable mix of trades, top-of-book quotes and price-level book updates, on a tick
grid. Generation is vectorized in fixed-size chunks drawn from one seeded generator, so the
sequence of events depends only on the seed and the config, never on timing.
"""

from __future__ import annotations

import numpy as np

from streamctl.ingest.vendors.sim.options import Options
from streamctl.shm.records import PRICE_SCALE, RECORD_DTYPE, Kind, Side

__all__ = ["SimGenerator"]

_CHUNK = 512


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
        """The next `n` events: the caller's to change (a view of a chunk no later take touches,
        so at live rates a slice costs no copy)."""
        while len(self._buffer) < n:
            self._buffer = np.concatenate([self._buffer, self._chunk()])
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

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
