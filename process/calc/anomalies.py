"""`Anomaly` payloads from the rows the kernels flag: z-score and jump (trades), crossed and
locked (quotes). One payload per rule that fires on a record, in record order (z-score before
jump on the same trade); ``detail`` says in words what triggered it.
"""

from __future__ import annotations

import numpy as np

from streamctl.bus.wire import Anomaly, topic
from streamctl.process.calc import trade_kernels as K
from streamctl.process.calc.batch import PRICE, PRICE2, TS_EVENT, TS_RECV

__all__ = ["AnomalyBuilder"]


class AnomalyBuilder:
    """Builds `Anomaly` payloads; knows each symbol's topic and the rules' thresholds."""

    def __init__(self, *, zscore_window: int, zscore_threshold: float, jump_pct: float):
        self._window = zscore_window
        self._zthr = zscore_threshold
        self._jump = jump_pct
        self._symbols: list[str] = []
        self._topics: list[str] = []

    def add_symbol(self, symbol: str) -> None:
        self._symbols.append(symbol)
        self._topics.append(topic("anomaly", symbol))

    def build(self, ai: np.ndarray, af: np.ndarray, ri: np.ndarray, sym: np.ndarray,
              quotes: np.ndarray, out: list) -> None:
        """Append payloads for trade rows (`ai`/`af`) and flagged quote rows (`quotes`), merged
        in record order."""
        items: list[tuple[int, int, tuple[str, Anomaly]]] = []
        for row, (value, aux1, aux2) in zip(ai.tolist(), af.tolist(), strict=True):
            rec, s, rule, price, ev, recv = row
            px = price / 1e9
            if rule == K.RULE_ZSCORE:
                anomaly = Anomaly(
                    symbol=self._symbols[s], rule="zscore", value=value, threshold=self._zthr, price=px,
                    detail=(f"price {px:.9g} is {value:+.2f} std from the mean {aux1:.9g} of the previous "
                            f"{self._window} trades (std {aux2:.6g}); |z| > {self._zthr:g}"),
                    ts_event=ev, ts_recv=recv)
            else:
                anomaly = Anomaly(
                    symbol=self._symbols[s], rule="jump", value=value, threshold=self._jump, price=px,
                    detail=f"price {px:.9g} moved {value:+.3f}% from the previous trade {aux1:.9g}; "
                           f"limit {self._jump:g}%",
                    ts_event=ev, ts_recv=recv)
            items.append((rec, rule, (self._topics[s], anomaly)))
        for i in quotes.tolist():
            s = int(sym[i])
            bid, ask, ev, recv = int(ri[i, PRICE]), int(ri[i, PRICE2]), int(ri[i, TS_EVENT]), int(ri[i, TS_RECV])
            crossed = bid > ask
            anomaly = Anomaly(
                symbol=self._symbols[s], rule="crossed" if crossed else "locked", value=(bid - ask) / 1e9,
                threshold=0.0, price=bid / 1e9,
                detail=(f"bid {bid / 1e9:.9g} {'>' if crossed else '=='} ask {ask / 1e9:.9g}"),
                ts_event=ev, ts_recv=recv)
            items.append((i, K.RULE_CROSSED if crossed else K.RULE_LOCKED, (self._topics[s], anomaly)))
        if len(items) > 1 and len(quotes) and len(ai):
            items.sort(key=lambda item: (item[0], item[1]))
        out.extend(item[2] for item in items)
