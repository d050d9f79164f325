"""Bridge: the plant's ZeroMQ topics -> what each browser watching the web view needs.

One `Subscriber` (the public client library, like any other application) feeds a small
last-value cache: the process table (``status.*``), supervisor events, recent bars of every
symbol and interval, anomalies; trades and the book only of the symbols someone watches
(subscribed while watched). Each browser gets a `View`: the snapshot of its symbol and
interval when it chooses them, then the changes, coalesced until its socket sends them, so
a fast feed never queues without bound behind a slow browser.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict, deque
from typing import Any

import msgspec

from streamctl.client import Anomaly, Bar, Book, Event, Status, Subscriber, Trade

__all__ = ["Bridge", "View"]

log = logging.getLogger("streamctl.web")

BARS_KEPT = 2000
"""Recent bars per (symbol, interval), the history a newly opened chart shows."""
TRADES_KEPT = 50
ANOMALIES_KEPT = 500
EVENTS_KEPT = 50
_TIME_INTERVAL = re.compile(r"\d+s")


def _plain(payload: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(payload)  # type: ignore[no-any-return]


class View:
    """What one browser watches, and the changes not yet sent to it."""

    def __init__(self) -> None:
        self.symbol: str | None = None
        self.interval: str | None = None
        self.pending: dict[str, Any] = {}
        self.ready = asyncio.Event()
        """Set when `pending` has something to send."""

    def push(self, key: str, value: Any, *, append: bool = False, limit: int = 0) -> None:
        if append:
            items = self.pending.setdefault(key, [])
            items.append(value)
            if limit and len(items) > limit:
                del items[: len(items) - limit]
        else:
            self.pending[key] = value
        self.ready.set()

    def take(self) -> dict[str, Any]:
        out, self.pending = self.pending, {}
        self.ready.clear()
        return out


class Bridge:
    """Subscribes to a plant's endpoint and keeps every `View` up to date."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._sub = Subscriber(endpoint)
        self._sub.subscribe("status.", "event.", "bar.", "anomaly.")
        self._sub.on_message(self._on_message)
        self._sub.on_error(self._on_error)
        self.errors = 0
        """Sequence gaps and undecodable messages seen (each skipped; the first of each kind logged)."""
        self._logged: set[type] = set()
        self.processes: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.bars: dict[tuple[str, str], deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=BARS_KEPT))
        self.anomalies: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=ANOMALIES_KEPT))
        self.trades: dict[str, deque[dict[str, Any]]] = {}
        self.books: dict[str, dict[str, Any]] = {}
        self.views: set[View] = set()
        self._watchers: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ views
    def add(self, view: View) -> None:
        self.views.add(view)
        view.push("processes", list(self.processes.values()))
        view.push("catalog", self.catalog())
        view.push("events", list(self.events))

    def remove(self, view: View) -> None:
        self.views.discard(view)
        if view.symbol is not None:
            self._unwatch(view.symbol)

    def watch(self, view: View, symbol: str, interval: str) -> None:
        """`view` now shows `symbol` at `interval`: send it the snapshot of both."""
        if view.symbol != symbol:
            if view.symbol is not None:
                self._unwatch(view.symbol)
            self._watchers[symbol] += 1
            if self._watchers[symbol] == 1:
                self._sub.subscribe(f"trade.{symbol}", f"book.{symbol}")
                self.trades[symbol] = deque(maxlen=TRADES_KEPT)
        view.symbol, view.interval = symbol, interval
        view.pending.pop("bars", None)
        view.pending.pop("trades", None)
        view.push("snapshot", {
            "symbol": symbol, "interval": interval, "bars": list(self.bars.get((symbol, interval), ())),
            "anomalies": list(self.anomalies.get(symbol, ())), "trades": list(self.trades[symbol]),
            "book": self.books.get(symbol)})

    def _unwatch(self, symbol: str) -> None:
        self._watchers[symbol] -= 1
        if self._watchers[symbol] <= 0:
            del self._watchers[symbol]
            self._sub.unsubscribe(f"trade.{symbol}", f"book.{symbol}")
            self.trades.pop(symbol, None)
            self.books.pop(symbol, None)

    def catalog(self) -> dict[str, list[str]]:
        """The symbols and time intervals bars have been seen for (the page's choices). Tick, volume
        and dollar bars are left out: they can close several times a second, and a chart's time
        axis takes one candle per instant."""
        intervals = {i for _, i in self.bars if _TIME_INTERVAL.fullmatch(i)}
        return {"symbols": sorted({s for s, _ in self.bars}), "intervals": sorted(intervals, key=lambda i: int(i[:-1]))}

    # ------------------------------------------------------------------ messages
    def _on_error(self, error: Exception) -> None:
        self.errors += 1
        if type(error) not in self._logged:
            self._logged.add(type(error))
            log.warning("web view: %s (skipped; later ones of this kind are only counted)", error)

    def _on_message(self, topic: str, payload: Any) -> None:
        if isinstance(payload, Bar):
            self._bar(payload)
        elif isinstance(payload, list):  # trade.SYMBOL arrays (only of watched symbols)
            self._trades([t for t in payload if isinstance(t, Trade)])
        elif isinstance(payload, Status):
            row = _plain(payload)
            self.processes[payload.name] = row
            for view in self.views:
                view.push("processes", list(self.processes.values()))
        elif isinstance(payload, Event):
            event = _plain(payload)
            self.events.append(event)
            for view in self.views:
                view.push("events", event, append=True, limit=EVENTS_KEPT)
        elif isinstance(payload, Anomaly):
            anomaly = _plain(payload)
            self.anomalies[payload.symbol].append(anomaly)
            for view in self.views:
                if view.symbol == payload.symbol:
                    view.push("anomalies", anomaly, append=True, limit=ANOMALIES_KEPT)
        elif isinstance(payload, Book):
            if payload.symbol in self._watchers:
                book = _plain(payload)
                self.books[payload.symbol] = book
                for view in self.views:
                    if view.symbol == payload.symbol:
                        view.push("book", book)

    def _bar(self, bar: Bar) -> None:
        key = (bar.symbol, bar.interval)
        new_series = key not in self.bars
        row = _plain(bar)
        self.bars[key].append(row)
        for view in self.views:
            if new_series:
                view.push("catalog", self.catalog())
            if view.symbol == bar.symbol and view.interval == bar.interval:
                view.push("bars", row, append=True, limit=BARS_KEPT)

    def _trades(self, trades: list[Trade]) -> None:
        if not trades or trades[0].symbol not in self.trades:
            return
        symbol = trades[0].symbol
        rows = [_plain(t) for t in trades[-TRADES_KEPT:]]
        self.trades[symbol].extend(rows)
        for view in self.views:
            if view.symbol == symbol:
                for row in rows:
                    view.push("trades", row, append=True, limit=TRADES_KEPT)

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        """Receive until cancelled."""
        try:
            while True:
                await self._sub.run_async(timeout=1.0)
        finally:
            self._sub.close()
