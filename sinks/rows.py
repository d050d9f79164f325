"""The four tables a sink stores, and how a payload becomes a row of one.

One place says, for every store, which columns a table has, in which order, with which type,
and which columns are its natural key: the key that makes writes idempotent, so a sink
restart or a store reconnect that writes a batch again adds nothing.

- bars: (symbol, interval, ts_start): one bar per interval start, whoever computed it;
- trades, quotes, anomalies: (symbol, src, seq, ts_event). `seq` alone repeats when a
  publisher restarts (it starts again at 1), so the event time of the row tells two runs
  apart (and a replay of the same input gives the same keys); the topic is ``KIND.SYMBOL``,
  so symbol stands for it. The key holds the time column, as a TimescaleDB hypertable needs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streamctl.bus import wire

__all__ = ["Table", "TABLES", "TABLE_OF_KIND", "ColumnType", "Row"]

ColumnType = Literal["text", "int", "float", "float?"]
"""``float?`` may be null (a quote's empty side)."""

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    """One stored table: its columns (name, type), natural key and topic kind."""

    name: str
    kind: str
    """The topic kind it holds (``bar``, ``trade`` ...)."""
    columns: tuple[tuple[str, ColumnType], ...]
    key: tuple[str, ...]
    time_column: str
    """Event time that dates a row (Parquet's ``date=`` partition, TimescaleDB's time column)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def index(self, column: str) -> int:
        return self.names.index(column)

    def row_of(self) -> Callable[[Any], Row]:
        """A function payload -> row tuple in column order (built once, used per message)."""
        return operator.attrgetter(*self.names)  # type: ignore[return-value]

    def topic(self, row: Row) -> str:
        """The plant topic a row came from (``bar.60s.AAPL``, ``trade.AAPL``)."""
        symbol = row[0]
        if self.kind == "bar":
            return wire.topic("bar", symbol, row[1])
        return wire.topic(self.kind, symbol)

    def key_of(self) -> Callable[[Row], tuple[Any, ...]]:
        """A function row -> natural key tuple."""
        return operator.itemgetter(*(self.index(c) for c in self.key))  # type: ignore[return-value]


_TAIL: tuple[tuple[str, ColumnType], ...] = (("src", "text"), ("seq", "int"))
_TICK_KEY = ("symbol", "src", "seq", "ts_event")

TABLES: tuple[Table, ...] = (
    Table("bars", "bar", (
        ("symbol", "text"), ("interval", "text"), ("ts_start", "int"), ("ts_end", "int"), ("open", "float"),
        ("high", "float"), ("low", "float"), ("close", "float"), ("volume", "float"), ("trades", "int"),
        ("vwap", "float"), ("ts_event", "int"), ("ts_recv", "int"), *_TAIL),
        key=("symbol", "interval", "ts_start"), time_column="ts_start"),
    Table("trades", "trade", (
        ("symbol", "text"), ("ts_event", "int"), ("ts_recv", "int"), ("price", "float"), ("size", "float"),
        ("side", "text"), *_TAIL),
        key=_TICK_KEY, time_column="ts_event"),
    Table("quotes", "quote", (
        ("symbol", "text"), ("ts_event", "int"), ("ts_recv", "int"), ("bid", "float?"), ("ask", "float?"),
        ("bid_size", "float"), ("ask_size", "float"), *_TAIL),
        key=_TICK_KEY, time_column="ts_event"),
    Table("anomalies", "anomaly", (
        ("symbol", "text"), ("ts_event", "int"), ("ts_recv", "int"), ("rule", "text"), ("detail", "text"),
        ("value", "float"), ("threshold", "float"), ("price", "float"), *_TAIL),
        key=_TICK_KEY, time_column="ts_event"),
)

TABLE_OF_KIND: dict[str, Table] = {t.kind: t for t in TABLES}
"""Topic kind -> its table."""

assert set(TABLE_OF_KIND) == {"bar", "trade", "quote", "anomaly"}
assert all(t.columns[0][0] == "symbol" for t in TABLES)  # Table.topic relies on it
