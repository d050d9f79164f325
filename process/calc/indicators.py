"""Trade-driven series for all symbols: session and rolling VWAP, SMA, EMA, z-score, jump and IQR rules.

The recurrences are in `trade_kernels`; this module owns their per-symbol state and parameters,
which `fused.run_batch` runs a batch through and writes as payloads (`encode`), each the value
after the symbol's last trade of the batch: one `Vwap` per symbol with trades in the batch (ascending local index), then for each
SMA window in config order one `Indicator` per such symbol whose window is full, then for each
EMA span one `Indicator` per such symbol.
"""

from __future__ import annotations

import numpy as np

from streamctl.bus.wire import topic
from streamctl.process.calc import trade_kernels
from streamctl.process.calc.encode import Producer, Strings, series_heads
from streamctl.process.calc.session_clock import SessionClock
from streamctl.process.calc.settings import CalculatorsConfig
from streamctl.process.calc.state import SymbolArrays

__all__ = ["TradeCalc", "zscore_price_limit"]


def zscore_price_limit(window: int) -> int:
    """Largest |price| (fixed point) the exact z-score sums accept: ``window * |price| <= 2**62``."""
    return (1 << 62) // window


class TradeCalc:
    """Trade-driven state of all symbols, updated per batch with `update`."""

    def __init__(self, config: CalculatorsConfig, capacity: int, producer: Producer):
        self._producer = producer
        vwap, anomalies = config.vwap, config.anomalies
        zscore = anomalies.zscore if anomalies is not None else None
        jump = anomalies.jump_pct if anomalies is not None else None
        iqr = anomalies.iqr if anomalies is not None else None
        self.vwap_window = vwap.rolling_window if vwap is not None else 0
        self.sma_windows = list(dict.fromkeys(config.sma))
        self.ema_spans = list(dict.fromkeys(config.ema))
        self.zscore = zscore
        self.clock = SessionClock(vwap.session_start, vwap.timezone) if vwap is not None else None
        windows = [self.vwap_window, *self.sma_windows, zscore.window if zscore else 1, iqr.window if iqr else 1]
        ring_size = 1 << (max(windows) - 1).bit_length()
        self.ring_size = ring_size
        """Trades kept per symbol: the largest window, rounded up to a power of two."""
        self._params_int = params = np.zeros(trade_kernels.NP_I, dtype=np.int64)
        params[trade_kernels.P_RING_SIZE] = ring_size
        params[trade_kernels.P_JUMP] = jump is not None
        params[trade_kernels.P_Z] = zscore is not None
        params[trade_kernels.P_ZW] = zscore.window if zscore else 2
        params[trade_kernels.P_ZLIM] = zscore_price_limit(zscore.window if zscore else 2)
        params[trade_kernels.P_VWAP] = vwap is not None
        params[trade_kernels.P_IQR] = iqr is not None
        params[trade_kernels.P_IQRW] = iqr.window if iqr else 2
        self._params_float = np.zeros(trade_kernels.NP_F, dtype=np.float64)
        self._params_float[trade_kernels.PF_JUMP] = jump or 0.0
        self._params_float[trade_kernels.PF_ZTHR] = zscore.threshold if zscore else 0.0
        self._params_float[trade_kernels.PF_IQRK] = iqr.k if iqr else 0.0
        self._sma_n = np.array(self.sma_windows, dtype=np.int64)
        self._ema_alpha = np.array([2.0 / (span + 1) for span in self.ema_spans], dtype=np.float64)
        self._ema_decay = 1.0 - self._ema_alpha
        self.state = st = SymbolArrays(capacity)
        st.add("ring_price", (ring_size,), np.int64, 0)
        st.add("ring_pv_vol", (ring_size, 2), np.float64, 0.0)
        st.add("state_int", (trade_kernels.NS_I,), np.int64, 0)
        st.add("state_float", (trade_kernels.NS_F,), np.float64, 0.0)
        st.add("z_sum_sq", (2,), np.uint64, 0)
        st.add("sma", (len(self.sma_windows),), np.int64, 0)
        st.add("ema", (len(self.ema_spans),), np.float64, 0.0)
        st.add("iqr_sorted", (iqr.window if iqr else 0,), np.int64, 0)
        # Topic ids in the producer's topic table, per symbol: its Vwap (no column without
        # VWAP), then each SMA window's and each EMA span's Indicator (`encode.pack_series`).
        self._spans = np.array([*self.sma_windows, *self.ema_spans], dtype=np.int64)
        st.add("tid", ((vwap is not None) + len(self._spans),), np.int64, -1)
        self._init_rows(0)
        self._stamp = 0
        self._bounds = np.zeros(2, dtype=np.int64)
        self._touched = np.zeros(capacity, dtype=np.int64)
        self._publishes = bool(vwap is not None or self.sma_windows or self.ema_spans)
        self._alloc_values(capacity)
        self._anomaly_int = np.zeros((0, trade_kernels.NA_I), dtype=np.int64)
        self._anomaly_float = np.zeros((0, trade_kernels.NA_F), dtype=np.float64)
        self.counts = np.zeros(1, dtype=np.int64)
        """[symbols whose z-score was disabled]"""
        self._n_symbols = 0
        self._heads = Strings()
        """`encode.series_heads` of every symbol, in local index order."""
        self.generation = 0
        """Bumped whenever an array of `table_arrays` is replaced."""

    def _init_rows(self, first: int) -> None:
        state_int = self.state["state_int"]
        state_int[first:, trade_kernels.S_SESS_START] = trade_kernels.NO_SESSION
        state_int[first:, trade_kernels.S_SESS_NEXT] = trade_kernels.NO_SESSION
        state_int[first:, trade_kernels.S_STAMP] = -1

    def resize(self, capacity: int) -> None:
        old = self.state.capacity
        self.state.resize(capacity)
        self.generation += 1
        self._init_rows(old)
        self._touched = np.zeros(capacity, dtype=np.int64)
        self._alloc_values(capacity)

    def _alloc_values(self, capacity: int) -> None:
        """Rows of values to publish per batch (see `trade_kernels.collect`), one per symbol."""
        self._values_int = np.zeros((capacity, 5), dtype=np.int64)
        columns = 3 + len(self.sma_windows) + len(self.ema_spans)
        self._values_float = np.zeros((capacity, columns), dtype=np.float64)

    def add_symbol(self, symbol: str) -> None:
        s = self._n_symbols
        self._n_symbols += 1
        names = [topic("vwap", symbol)] if self.clock is not None else []
        names += [topic("sma", symbol, n) for n in self.sma_windows] + [topic("ema", symbol, n) for n in self.ema_spans]
        self.state["tid"][s] = [self._producer.topics.id(name) for name in names]
        for head in series_heads(self._producer.name, symbol, self.vwap_window, self.sma_windows, self.ema_spans):
            self._heads.append(head)
        self.generation += 1

    def export_state(self, into: dict | None = None) -> dict:
        """Every symbol's trade ring, VWAP sums, SMA/EMA and rule state, and the batch stamp
        the kernels compare with (a checkpoint's part)."""
        return {"arrays": self.state.export(self._n_symbols, (into or {}).get("arrays")), "stamp": self._stamp}

    def load_state(self, state: dict) -> None:
        self.state.load(state["arrays"], self._n_symbols)
        self._stamp = int(state["stamp"])
        self.generation += 1

    def reserve(self, n_trades: int) -> None:
        """Room for the anomaly rows of a batch of `n_trades` trades (`fused.run_batch`)."""
        rows = trade_kernels.RULES_PER_TRADE * n_trades
        if len(self._anomaly_int) < rows:
            self._anomaly_int = np.zeros((rows, trade_kernels.NA_I), dtype=np.int64)
            self._anomaly_float = np.zeros((rows, trade_kernels.NA_F), dtype=np.float64)
            self.generation += 1

    def cover(self, tmin: int, tmax: int) -> None:
        """Session bounds bracketing event times `tmin`..`tmax` (the kernel asks when a batch leaves them)."""
        assert self.clock is not None
        self._bounds = self.clock.cover(tmin, tmax)
        self.generation += 1

    def next_stamp(self) -> int:
        """The stamp of the next batch with trades (the kernels tell a symbol's first touch in a batch by it)."""
        return self._stamp + 1

    def batch_done(self) -> None:
        """A batch with trades went through the kernels: the next one takes a new stamp."""
        self._stamp += 1

    def anomaly_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last batch's anomaly rows ``(anomaly_int, anomaly_float)`` (columns
        `trade_kernels.A_*`, `trade_kernels.AF_*`)."""
        return self._anomaly_int[:n], self._anomaly_float[:n]

    def table_arrays(self) -> dict[str, np.ndarray]:
        """This calculator's arrays in `fused.SLOTS` (valid until `generation` changes)."""
        st = self.state
        return {"params_int": self._params_int, "params_float": self._params_float, "sma_n": self._sma_n,
                "ema_alpha": self._ema_alpha, "ema_decay": self._ema_decay, "bounds": self._bounds,
                "ring_price": st["ring_price"], "ring_pv_vol": st["ring_pv_vol"], "state_int": st["state_int"],
                "state_float": st["state_float"], "z_sum_sq": st["z_sum_sq"], "sma": st["sma"], "ema": st["ema"],
                "iqr_sorted": st["iqr_sorted"], "touched": self._touched, "anomaly_int": self._anomaly_int,
                "anomaly_float": self._anomaly_float, "trade_counts": self.counts, "values_int": self._values_int,
                "values_float": self._values_float, "series_tid": st["tid"], "spans": self._spans,
                "heads": self._heads.data, "head_ends": self._heads.ends}

    @property
    def publishes(self) -> bool:
        """Whether batches give Vwap or Indicator payloads."""
        return self._publishes
