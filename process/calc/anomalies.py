"""`Anomaly` payloads from the rows the kernels flag: z-score, jump and IQR (trades), crossed and
locked (quotes). One payload per rule that fires on a record, in record order (z-score, then
jump, then IQR on the same trade); ``detail`` says in words what triggered it.
"""

from __future__ import annotations

import numpy as np

from streamctl.bus.messages import MessageWriter
from streamctl.bus.wire import Anomaly, topic
from streamctl.process.calc import trade_kernels
from streamctl.process.calc.batch import PRICE, PRICE2, TS_EVENT, TS_RECV
from streamctl.process.calc.settings import AnomalyConfig, IQRConfig, ZScoreConfig

__all__ = ["AnomalyBuilder"]

_NO_ZSCORE = ZScoreConfig()
_NO_IQR = IQRConfig()


class AnomalyBuilder:
    """Builds `Anomaly` payloads; knows each symbol's topic and the rules' thresholds."""

    def __init__(self, config: AnomalyConfig | None):
        # A rule that is off never flags a row, so its settings are only placeholders here.
        self._zscore = (config.zscore if config is not None else None) or _NO_ZSCORE
        self._iqr = (config.iqr if config is not None else None) or _NO_IQR
        self._jump = (config.jump_pct if config is not None else None) or 0.0
        self._symbols: list[str] = []
        self._topics: list[str] = []

    def add_symbol(self, symbol: str) -> None:
        self._symbols.append(symbol)
        self._topics.append(topic("anomaly", symbol))

    def _trade_anomaly(self, symbol: str, rule: int, px: float, value: float, aux1: float, aux2: float, ev: int,
                       recv: int) -> Anomaly:
        """The payload of one trade row (`aux1`/`aux2`: see `trade_kernels.update_trades`)."""
        if rule == trade_kernels.RULE_ZSCORE:
            window, threshold = self._zscore.window, self._zscore.threshold
            return Anomaly(
                symbol=symbol, rule="zscore", value=value, threshold=threshold, price=px,
                detail=(f"price {px:.9g} is {value:+.2f} std from the mean {aux1:.9g} of the previous "
                        f"{window} trades (std {aux2:.6g}); |z| > {threshold:g}"),
                ts_event=ev, ts_recv=recv)
        if rule == trade_kernels.RULE_JUMP:
            return Anomaly(
                symbol=symbol, rule="jump", value=value, threshold=self._jump, price=px,
                detail=f"price {px:.9g} moved {value:+.3f}% from the previous trade {aux1:.9g}; "
                       f"limit {self._jump:g}%",
                ts_event=ev, ts_recv=recv)
        k, spread = self._iqr.k, aux2 - aux1
        return Anomaly(
            symbol=symbol, rule="iqr", value=value, threshold=k, price=px,
            detail=(f"price {px:.9g} is outside [{aux1 - k * spread:.9g}, {aux2 + k * spread:.9g}] = "
                    f"[Q1 - {k:g}*IQR, Q3 + {k:g}*IQR] of the previous {self._iqr.window} trades "
                    f"(Q1 {aux1:.9g}, Q3 {aux2:.9g}); {value:+.2f} IQR beyond the quartile"),
            ts_event=ev, ts_recv=recv)

    def build(self, anomaly_int: np.ndarray, anomaly_float: np.ndarray, rows_int: np.ndarray, sym: np.ndarray,
              quotes: np.ndarray, out: MessageWriter) -> None:
        """Append payloads for trade rows (`anomaly_int`/`anomaly_float`) and flagged quote rows
        (`quotes`), merged in record order."""
        items: list[tuple[int, int, tuple[str, Anomaly]]] = []
        for row, (value, aux1, aux2) in zip(anomaly_int.tolist(), anomaly_float.tolist(), strict=True):
            rec, s, rule, price, ev, recv = row
            anomaly = self._trade_anomaly(self._symbols[s], rule, price / 1e9, value, aux1, aux2, ev, recv)
            items.append((rec, rule, (self._topics[s], anomaly)))
        for i in quotes.tolist():
            s = int(sym[i])
            bid, ask = int(rows_int[i, PRICE]), int(rows_int[i, PRICE2])
            ev, recv = int(rows_int[i, TS_EVENT]), int(rows_int[i, TS_RECV])
            crossed = bid > ask
            anomaly = Anomaly(
                symbol=self._symbols[s], rule="crossed" if crossed else "locked", value=(bid - ask) / 1e9,
                threshold=0.0, price=bid / 1e9,
                detail=(f"bid {bid / 1e9:.9g} {'>' if crossed else '=='} ask {ask / 1e9:.9g}"),
                ts_event=ev, ts_recv=recv)
            rule = trade_kernels.RULE_CROSSED if crossed else trade_kernels.RULE_LOCKED
            items.append((i, rule, (self._topics[s], anomaly)))
        if len(items) > 1 and len(quotes) and len(anomaly_int):
            # Record order; on one trade the rule numbers (z-score 0, jump 1, IQR 4) keep the
            # kernel's order.
            items.sort(key=lambda item: (item[0], item[1]))
        for _, _, (text, anomaly) in items:
            out.add(text, anomaly)
