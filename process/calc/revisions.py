"""Bar revisions: a vendor corrected or cancelled a trade, so the time bars holding it change.

The worker keeps its last `correction_window` valid trades (all symbols, in arrival order) in
a ring of numpy columns, with each trade's vendor id (``sequence``) and which time specs it was
late for. A CORRECTION or CANCEL record (docs/records.md) finds its trade by (symbol, id),
changes or voids it there, and rebuilds each time bar holding it from the ring, in arrival
order, with the same arithmetic as the bar kernels (so a bar rebuilt without a trade equals the
bar a file without that trade gives):

- a bar still open is patched in place: it is published once, corrected, when it closes;
- a bar already published is published again with ``revision`` = 1, 2, ...

Tick, volume and dollar bars, VWAPs and indicators are not revised (a voided trade would move
every later boundary of a tick bar). A correction whose trade is not in the ring, or whose bar
has lost trades to the ring's wrap, is counted in ``corrections_unmatched`` and logged once.
Corrections are rare: applying one is plain numpy, run per correction record. Remembering every
trade is not: that is `_record`, which `fused.run_batch` runs on each batch.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from streamctl.bus.messages import MessageWriter
from streamctl.bus.wire import Bar
from streamctl.process.calc import bar_kernels as bk
from streamctl.process.calc.bars import BarCalc
from streamctl.process.calc.batch import PRICE, PRICE2, SEQUENCE, SIZE, TS_EVENT, TS_RECV
from streamctl.process.calc.state import copy_into
from streamctl.shm.records import Kind

__all__ = ["Revisions"]


class Revisions:
    """The trade ring and the revision numbers of one worker's time bars."""

    def __init__(self, bars: BarCalc, capacity: int):
        self._bars = bars
        self._cap = capacity
        self._next = 0  # trades appended so far
        self.sym = np.zeros(capacity, np.int32)
        self.tid = np.zeros(capacity, np.uint64)
        self.ts = np.zeros(capacity, np.int64)
        self.recv = np.zeros(capacity, np.int64)
        self.price = np.zeros(capacity, np.int64)
        self.size = np.zeros(capacity, np.float64)
        self.late = np.zeros(capacity, np.int64)
        self._evicted = np.full(16, np.iinfo(np.int64).min, np.int64)
        """Per symbol: the latest event time of a trade the ring has dropped."""
        self._revision: dict[tuple[int, int, int], int] = {}
        self.counts = {"corrections": 0, "corrections_unmatched": 0}
        self._on = capacity > 0 and any(k == bk.TIME for k in bars.spec_kinds.tolist())
        self.generation = 0
        """Bumped whenever an array of `table_arrays` is replaced."""

    @property
    def next(self) -> int:
        """Trades recorded so far (the ring position of the next one, modulo its capacity)."""
        return self._next

    def recorded(self, n: int) -> None:
        """`fused.run_batch` wrote `n` more trades into the ring (`_record`)."""
        if self._on:
            self._next += n

    def table_arrays(self) -> dict[str, np.ndarray]:
        """The ring in `fused.SLOTS` (valid until `generation` changes); `capacity` 0 when off."""
        return {"r_sym": self.sym, "r_tid": self.tid, "r_ts": self.ts, "r_recv": self.recv, "r_price": self.price,
                "r_size": self.size, "r_late": self.late, "r_evicted": self._evicted}

    @property
    def capacity(self) -> int:
        """Trades the ring holds; 0 when it is off (no time bars or no correction window)."""
        return self._cap if self._on else 0

    def apply(self, kind: int, s: int, row_int: np.ndarray, row_float: np.ndarray, out: MessageWriter) -> bool:
        """One CORRECTION or CANCEL of symbol `s`; appends revised bars to `out`. False if unmatched."""
        held = min(self._next, self._cap)
        order = (self._next - held + np.arange(held)) % self._cap  # oldest first
        match = order[(self.sym[order] == s) & (self.tid[order] == np.uint64(row_int[SEQUENCE]))]
        if not len(match):
            self.counts["corrections_unmatched"] += 1
            return False
        j = int(match[-1])
        ts = int(self.ts[j])
        if kind == Kind.CANCEL:
            self.size[j] = 0.0  # void: a size-0 trade is never a valid trade, so never rebuilt into a bar
        else:
            self.price[j] = row_int[PRICE]
            self.size[j] = row_float[SIZE]
            self.tid[j] = np.uint64(row_int[PRICE2])  # the corrected trade's new id
        widths, kinds = self._bars.widths, self._bars.spec_kinds
        state_i, state_f = self._bars.state["bar_int"], self._bars.state["bar_float"]
        for k in range(len(widths)):
            if kinds[k] != bk.TIME or (int(self.late[j]) >> k) & 1:
                continue
            width = int(widths[k])
            start = ts - ts % width
            if s < len(self._evicted) and self._evicted[s] >= start:
                self.counts["corrections_unmatched"] += 1
                continue
            bar = self._rebuild(order, s, k, start, start + width)
            is_open = state_i[s, k, bk.B_TRADES] > 0 and state_i[s, k, bk.B_START] == start
            if is_open:
                self._patch(state_i[s, k], state_f[s, k], bar)
            elif start + width <= state_i[s, k, bk.B_WM]:
                key = (s, k, start)
                self._revision[key] = self._revision.get(key, 0) + 1
                out.add(self._bars.topic(s, k), self._payload(s, k, start, start + width, bar, self._revision[key]))
        self.counts["corrections"] += 1
        return True

    _RING = ("sym", "tid", "ts", "recv", "price", "size", "late")

    def export_state(self, into: dict | None = None) -> dict:
        """The trade ring, evictions and revision numbers (a checkpoint's part)."""
        spare = (into or {}).get("ring") or {}
        return {"ring": {name: copy_into(getattr(self, name), spare.get(name)) for name in self._RING},
                "next": self._next,
                "evicted": self._evicted.copy(), "counts": dict(self.counts),
                "revision": [[*key, n] for key, n in self._revision.items()]}

    def load_state(self, state: dict) -> None:
        ring = state["ring"]
        if set(ring) != set(self._RING):
            raise ValueError(f"revision ring must hold {sorted(self._RING)}; held {sorted(ring)}")
        for name in self._RING:
            current, saved = getattr(self, name), ring[name]
            if saved.dtype != current.dtype or saved.shape != current.shape:
                raise ValueError(f"revision ring `{name}` must be {current.dtype} {current.shape}; was "
                                 f"{saved.dtype} {saved.shape} (`correction_window` changed?)")
            current[:] = saved
        self._next = int(state["next"])
        self._evicted = np.array(state["evicted"], dtype=np.int64)
        self.generation += 1
        self.counts.update({name: int(state["counts"][name]) for name in self.counts})
        self._revision = {(int(s), int(k), int(start)): int(n) for s, k, start, n in state["revision"]}

    def resize(self, symbols: int) -> None:
        if symbols > len(self._evicted):
            grown = np.full(symbols, np.iinfo(np.int64).min, np.int64)
            grown[: len(self._evicted)] = self._evicted
            self._evicted = grown
            self.generation += 1

    # ---- internals
    def _rebuild(self, order: np.ndarray, s: int, k: int, start: int, end: int) -> dict:
        """The bar of (s, k) over [start, end) from the ring's trades, in arrival order."""
        rows = order[(self.sym[order] == s) & (self.ts[order] >= start) & (self.ts[order] < end)
                     & (self.size[order] > 0) & (((self.late[order] >> k) & 1) == 0)]
        if not len(rows):
            return {"trades": 0}
        price, size = self.price[rows], self.size[rows]
        volume = notional = 0.0
        for p, q in zip(price.tolist(), size.tolist(), strict=True):  # the kernels' sequential sums
            volume += q
            notional += (p / 1e9) * q
        return {"open": int(price[0]), "high": int(price.max()), "low": int(price.min()), "close": int(price[-1]),
                "trades": len(rows), "volume": volume, "notional": notional, "ev": int(self.ts[rows[-1]]),
                "recv": int(self.recv[rows[-1]])}

    @staticmethod
    def _patch(state_i: np.ndarray, state_f: np.ndarray, bar: dict) -> None:
        """Overwrite an open bar's state with the rebuilt one (no trades left: the bar is no longer open)."""
        state_i[bk.B_TRADES] = bar["trades"]
        if not bar["trades"]:
            return
        state_i[bk.B_OPEN], state_i[bk.B_HIGH], state_i[bk.B_LOW], state_i[bk.B_CLOSE] = (
            bar["open"], bar["high"], bar["low"], bar["close"])
        state_i[bk.B_LAST_EV], state_i[bk.B_LAST_RECV] = bar["ev"], bar["recv"]
        state_f[bk.B_VOL], state_f[bk.B_NOTIONAL] = bar["volume"], bar["notional"]

    def _payload(self, s: int, k: int, start: int, end: int, bar: dict, revision: int) -> Bar:
        symbol, label = self._bars.symbol(s), self._bars.labels[k]
        if not bar["trades"]:  # every trade of the bar was voided
            nan = math.nan
            return Bar(symbol=symbol, interval=label, ts_start=start, ts_end=end, open=nan, high=nan, low=nan,
                       close=nan, volume=0.0, trades=0, vwap=nan, ts_event=start, ts_recv=0, revision=revision)
        return Bar(symbol=symbol, interval=label, ts_start=start, ts_end=end, open=bar["open"] / 1e9,
                   high=bar["high"] / 1e9, low=bar["low"] / 1e9, close=bar["close"] / 1e9, volume=bar["volume"],
                   trades=bar["trades"], vwap=bar["notional"] / bar["volume"], ts_event=bar["ev"],
                   ts_recv=bar["recv"], revision=revision)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _record(rows_int, rows_float, sym, trades, late_mask, first, cap, r_sym, r_tid, r_ts, r_recv, r_price, r_size,
            r_late, evicted):
    """Write trades ``trades[j]`` at ring positions ``first + j`` (mod `cap`); a trade pushed out of
    the ring raises its symbol's ``evicted`` time (a bar holding it can no longer be rebuilt)."""
    at = first % cap
    for j in range(trades.shape[0]):
        if first + j >= cap:
            old = r_sym[at]
            if r_ts[at] > evicted[old]:
                evicted[old] = r_ts[at]
        i = trades[j]
        r_sym[at] = sym[i]
        r_tid[at] = rows_int[i, SEQUENCE]
        r_ts[at] = rows_int[i, TS_EVENT]
        r_recv[at] = rows_int[i, TS_RECV]
        r_price[at] = rows_int[i, PRICE]
        r_size[at] = rows_float[i, SIZE]
        r_late[at] = late_mask[j]
        at += 1
        if at == cap:
            at = 0
