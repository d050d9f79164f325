"""SQL text shared by the SQLite and PostgreSQL stores: the tables with their natural keys."""

from __future__ import annotations

from streamctl.sinks.rows import Table

__all__ = ["create_table", "column_list", "held_query", "held_topic"]

_TYPES = {
    "sqlite": {"text": "TEXT NOT NULL", "int": "INTEGER NOT NULL", "float": "REAL NOT NULL", "float?": "REAL"},
    "postgres": {"text": "TEXT NOT NULL", "int": "BIGINT NOT NULL", "float": "DOUBLE PRECISION NOT NULL",
                 "float?": "DOUBLE PRECISION"},
}


def column_list(table: Table) -> str:
    return ", ".join(f'"{name}"' for name in table.names)


def create_table(table: Table, dialect: str, *, qualified: str | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with the natural key as primary key."""
    types = _TYPES[dialect]
    cols = ", ".join(f'"{name}" {types[kind]}' for name, kind in table.columns)
    key = ", ".join(f'"{name}"' for name in table.key)
    suffix = " WITHOUT ROWID" if dialect == "sqlite" else ""
    return f"CREATE TABLE IF NOT EXISTS {qualified or table.name} ({cols}, PRIMARY KEY ({key})){suffix}"


def held_query(table: Table, *, qualified: str | None = None) -> str:
    """The latest row's (symbol, [interval,] src, seq) per topic and publisher: the newest by
    ``ts_start`` for bars, by receive time then seq for the others."""
    group = ["symbol", "interval"] if table.kind == "bar" else ["symbol"]
    order = "ts_start DESC" if table.kind == "bar" else "ts_recv DESC, seq DESC"
    cols = ", ".join(f'"{c}"' for c in [*group, "src", "seq"])
    part = ", ".join(f'"{c}"' for c in [*group, "src"])
    return (f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {part} ORDER BY {order}) AS r "
            f"FROM {qualified or table.name}) AS latest WHERE r = 1")


def held_topic(table: Table, found: tuple) -> tuple[str, str, int]:
    """A `held_query` result row as (topic, src, seq)."""
    if table.kind == "bar":
        symbol, interval, src, seq = found
        return table.topic((symbol, interval)), src, int(seq)
    symbol, src, seq = found
    return table.topic((symbol,)), src, int(seq)
