"""CME market-by-order state: order updates (MDIncrementalRefreshOrderBook47, the order entries
of 46, SnapshotFullRefreshOrderBook53) turned into our price-keyed `Kind.BOOK` records.

CME names each order by ``OrderID`` and says New, Change (new price and/or quantity; a price
change moves the order) or Delete. Workers keep a price-level book, so each update becomes the
levels whose total visible quantity changed, as the Databento MBO path does.
"""

from __future__ import annotations

from streamctl.ingest.vendors.cme.book import CHANGE, DELETE, NEW
from streamctl.shm.records import Side

__all__ = ["OrderBook", "Order"]

Order = tuple[int, int, int, int]
"""(SecurityID, side, price 1e-9, visible quantity)."""
Change = tuple[int, int, float]
"""(side, price 1e-9, new level total; 0 = the level is gone)."""


class OrderBook:
    """Every resting order of a channel by OrderID, and each (SecurityID, side, price) total."""

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.totals: dict[tuple[int, int, int], int] = {}

    def _add(self, order_id: int, order: Order) -> None:
        self.orders[order_id] = order
        key = order[:3]
        self.totals[key] = self.totals.get(key, 0) + order[3]

    def _remove(self, order_id: int) -> Order:
        order = self.orders.pop(order_id)
        key = order[:3]
        left = self.totals[key] - order[3]
        if left:
            self.totals[key] = left
        else:
            del self.totals[key]
        return order

    def apply(self, action: int, order_id: int, sid: int, side: int, price: int, qty: int) -> list[Change] | None:
        """Apply one order update; the levels it changed, or None if it does not fit the state
        (a New of a resting order, a Change or Delete of an unknown one or naming another
        instrument), which the caller counts."""
        touched: list[tuple[int, int]] = []
        if action == NEW:
            if order_id in self.orders:
                return None
        elif action in (CHANGE, DELETE):
            if order_id not in self.orders or self.orders[order_id][0] != sid:
                return None
            old = self._remove(order_id)
            touched.append((old[1], old[2]))
        else:
            return None
        if action != DELETE:
            self._add(order_id, (sid, side, price, qty))
            touched.append((side, price))
        return [(s, p, float(self.totals.get((sid, s, p), 0))) for s, p in dict.fromkeys(touched)]

    def clear(self, sid: int) -> None:
        """Drop every order of one instrument."""
        for order_id in [o for o, order in self.orders.items() if order[0] == sid]:
            self._remove(order_id)

    def levels(self, sid: int, side: int) -> list[tuple[int, int]]:
        """(price, total) of one side, best first."""
        out = [(p, total) for (s, sd, p), total in self.totals.items() if s == sid and sd == side]
        return sorted(out, reverse=side == Side.BID)

    def published(self, sid: int) -> list[Change]:
        """Every level of one instrument (for a rebuilt book)."""
        return [(sd, p, float(total)) for (s, sd, p), total in self.totals.items() if s == sid]
