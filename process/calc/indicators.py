"""Trade-driven series for all symbols: session and rolling VWAP, SMA, EMA, z-score and jump rules.

The recurrences are in `trade_kernels`; this module owns their per-symbol state and parameters,
and turns a batch's results into payloads, each the value after the symbol's last trade of the
batch: one `Vwap` per symbol with trades in the batch (ascending local index), then for each
SMA window in config order one `Indicator` per such symbol whose window is full, then for each
EMA span one `Indicator` per such symbol.
"""

from __future__ import annotations

import numpy as np

from streamctl.bus.wire import Indicator, Vwap, topic
from streamctl.process.calc import trade_kernels as K
from streamctl.process.calc.session_clock import SessionClock
from streamctl.process.calc.settings import CalculatorsConfig
from streamctl.process.calc.state import SymbolArrays

__all__ = ["TradeCalc", "zscore_price_limit"]


def zscore_price_limit(window: int) -> int:
    """Largest |price| (fixed point) the exact z-score sums accept: ``window * |price| <= 2**62``."""
    return (1 << 62) // window


class TradeCalc:
    """Trade-driven state of all symbols, updated per batch with `update`."""

    def __init__(self, config: CalculatorsConfig, capacity: int):
        vwap, anomalies = config.vwap, config.anomalies
        zscore = anomalies.zscore if anomalies is not None else None
        jump = anomalies.jump_pct if anomalies is not None else None
        self.vwap_window = vwap.rolling_window if vwap is not None else 0
        self.sma_windows = list(dict.fromkeys(config.sma))
        self.ema_spans = list(dict.fromkeys(config.ema))
        self.zscore = zscore
        self.clock = SessionClock(vwap.session_start, vwap.timezone) if vwap is not None else None
        need = max([1, self.vwap_window, *self.sma_windows, zscore.window if zscore else 1])
        H = 1 << (need - 1).bit_length()
        self.H = H
        self._ip = np.zeros(K.NP_I, dtype=np.int64)
        self._ip[K.P_H] = H
        self._ip[K.P_JUMP] = jump is not None
        self._ip[K.P_Z] = zscore is not None
        self._ip[K.P_ZW] = zscore.window if zscore else 2
        self._ip[K.P_ZLIM] = zscore_price_limit(zscore.window if zscore else 2)
        self._ip[K.P_VWAP] = vwap is not None
        self._fp = np.array([jump or 0.0, zscore.threshold if zscore else 0.0], dtype=np.float64)
        self._sma_n = np.array(self.sma_windows, dtype=np.int64)
        self._alpha = np.array([2.0 / (span + 1) for span in self.ema_spans], dtype=np.float64)
        self._om = 1.0 - self._alpha
        self.state = st = SymbolArrays(capacity)
        st.add("ring_p", (H,), np.int64, 0)
        st.add("ring_f", (H, 2), np.float64, 0.0)
        st.add("si", (K.NS_I,), np.int64, 0)
        st.add("sf", (K.NS_F,), np.float64, 0.0)
        st.add("z2", (2,), np.uint64, 0)
        st.add("sma", (len(self.sma_windows),), np.int64, 0)
        st.add("ema", (len(self.ema_spans),), np.float64, 0.0)
        self._init_rows(0)
        self._stamp = 0
        self._n_touched = 0
        self._bounds = np.zeros(2, dtype=np.int64)
        self._lo, self._hi = 1, 0  # the bounds cover [lo, hi)
        self._touched = np.zeros(capacity, dtype=np.int64)
        self._publishes = bool(vwap is not None or self.sma_windows or self.ema_spans)
        self._alloc_values(capacity)
        self._ai = np.zeros((0, K.NA_I), dtype=np.int64)
        self._af = np.zeros((0, K.NA_F), dtype=np.float64)
        self.counts = np.zeros(1, dtype=np.int64)
        """[symbols whose z-score was disabled]"""
        self._symbols: list[str] = []
        self._vwap_topics: list[str] = []
        self._sma_topics: list[list[str]] = [[] for _ in self.sma_windows]
        self._ema_topics: list[list[str]] = [[] for _ in self.ema_spans]

    def _init_rows(self, first: int) -> None:
        si = self.state["si"]
        si[first:, K.S_SESS_START] = K.NO_SESSION
        si[first:, K.S_SESS_NEXT] = K.NO_SESSION
        si[first:, K.S_STAMP] = -1

    def resize(self, capacity: int) -> None:
        old = self.state.capacity
        self.state.resize(capacity)
        self._init_rows(old)
        self._touched = np.zeros(capacity, dtype=np.int64)
        self._alloc_values(capacity)

    def _alloc_values(self, capacity: int) -> None:
        """Rows of values to publish per batch (see `trade_kernels.collect`), one per symbol."""
        self._vi = np.zeros((capacity, 5), dtype=np.int64)
        self._vf = np.zeros((capacity, 3 + len(self.sma_windows) + len(self.ema_spans)), dtype=np.float64)

    def add_symbol(self, symbol: str) -> None:
        self._symbols.append(symbol)
        self._vwap_topics.append(topic("vwap", symbol))
        for topics, n in zip(self._sma_topics, self.sma_windows, strict=True):
            topics.append(topic("sma", symbol, n))
        for topics, n in zip(self._ema_topics, self.ema_spans, strict=True):
            topics.append(topic("ema", symbol, n))

    def update(self, ri, rf, sym, trades, n_trades: int, tmin: int, tmax: int) -> tuple[np.ndarray, np.ndarray]:
        """Apply a batch's valid trades; return its anomaly rows ``(ai, af)`` (see `trade_kernels`).

        `publish` then gives the batch's Vwap and Indicator payloads.
        """
        if self.clock is not None and not (self._lo <= tmin and tmax < self._hi):
            self._bounds = self.clock.cover(tmin, tmax)
            self._lo, self._hi = int(self._bounds[0]), int(self._bounds[-1])
        if len(self._ai) < 2 * n_trades:
            self._ai = np.zeros((2 * n_trades, K.NA_I), dtype=np.int64)
            self._af = np.zeros((2 * n_trades, K.NA_F), dtype=np.float64)
        self._stamp += 1
        st = self.state
        n_touch, n_an = K.update_and_collect(
            ri, rf, sym, trades, n_trades, self._stamp, self._ip, self._fp, self._sma_n, self._alpha, self._om,
            self._bounds, st["ring_p"], st["ring_f"], st["si"], st["sf"], st["z2"], st["sma"], st["ema"],
            self._touched, self._ai, self._af, self.counts, self.vwap_window, self._publishes, self._vi, self._vf)
        self._n_touched = n_touch if self._publishes else 0
        return self._ai[:n_an], self._af[:n_an]

    def publish(self, out: list) -> None:
        """Append the last batch's Vwap and Indicator payloads to `out` (see module doc)."""
        n = self._n_touched
        if not n:
            return
        self._n_touched = 0
        rows = self._vi[:n].tolist()
        values = self._vf[:n].tolist()
        names = self._symbols
        if self.clock is not None:
            topics = self._vwap_topics
            window = self.vwap_window
            out += [(topics[s], Vwap(symbol=names[s], ts_event=ev, ts_recv=recv, session_start=start,
                                     session_vwap=v[0], session_volume=v[1], rolling_vwap=v[2], window=window))
                    for (s, ev, recv, start, _), v in zip(rows, values, strict=True)]
        for k, n in enumerate(self.sma_windows):
            topics = self._sma_topics[k]
            col = 3 + k
            out += [(topics[s], Indicator(symbol=names[s], name="sma", window=n, value=v[col], ts_event=ev,
                                          ts_recv=recv))
                    for (s, ev, recv, _, count), v in zip(rows, values, strict=True) if count >= n]
        for k, n in enumerate(self.ema_spans):
            topics = self._ema_topics[k]
            col = 3 + len(self.sma_windows) + k
            out += [(topics[s], Indicator(symbol=names[s], name="ema", window=n, value=v[col], ts_event=ev,
                                          ts_recv=recv))
                    for (s, ev, recv, _, _), v in zip(rows, values, strict=True)]
