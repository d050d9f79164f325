"""PostgreSQL (>= 14) through psycopg 3: binary COPY into a staging table, then one INSERT.

Each batch, per table, is copied in binary into a temporary staging table (``ON COMMIT DELETE
ROWS``) and moved with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` in the same
transaction: COPY's speed, and a batch written twice (a sink restart, a reconnect mid-batch)
adds nothing. Tables are created if absent; with the TimescaleDB extension available they
become hypertables on their event-time column (nanoseconds, one-day chunks).
"""

from __future__ import annotations

from typing import Any

from streamctl.sinks.rows import TABLES, Row, Table
from streamctl.sinks.settings import PostgresSink
from streamctl.sinks.stores import Held, StoreDown, require
from streamctl.sinks.stores.sql import column_list, create_table, held_query, held_topic

__all__ = ["PostgresStore", "make"]

_PG_TYPES = {"text": "text", "int": "int8", "float": "float8", "float?": "float8"}
_DAY_NS = 86_400 * 10**9


class PostgresStore:
    """Rows into PostgreSQL (see the module docstring)."""

    def __init__(self, config: PostgresSink):
        self.config = config
        self._psycopg: Any = require("psycopg", "psycopg[binary]", "postgres")
        self._conn: Any = None
        schema = config.schema
        self._qualified = {t: f'"{schema}"."{t.name}"' for t in TABLES}
        self._copy = {t: f"COPY stage_{t.name} ({column_list(t)}) FROM STDIN (FORMAT BINARY)" for t in TABLES}
        self._move = {t: f"INSERT INTO {self._qualified[t]} ({column_list(t)}) SELECT {column_list(t)} "
                         f"FROM stage_{t.name} ON CONFLICT DO NOTHING" for t in TABLES}
        self._types = {t: [_PG_TYPES[kind] for _, kind in t.columns] for t in TABLES}

    def open(self) -> None:
        c = self.config
        try:
            conn = self._psycopg.connect(host=c.host, port=c.port, dbname=c.dbname, user=c.user, password=c.password,
                                         connect_timeout=5, application_name="streamctl-sink", autocommit=True)
        except self._psycopg.OperationalError as exc:
            raise StoreDown(f"cannot connect to PostgreSQL at {c.host}:{c.port}: {_one_line(exc)}") from None
        try:
            with conn.transaction():
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{c.schema}"')
                timescale = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None
                if timescale:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                for table in TABLES:
                    conn.execute(create_table(table, "postgres", qualified=self._qualified[table]))
                    if timescale:
                        conn.execute("SELECT create_hypertable(%s, by_range(%s, %s::bigint), if_not_exists => TRUE)",
                                     (self._qualified[table], table.time_column, _DAY_NS))
                    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{table.name} "
                                 f"(LIKE {self._qualified[table]}) ON COMMIT DELETE ROWS")
        except self._psycopg.Error as exc:
            conn.close()
            raise StoreDown(f"cannot prepare the tables: {_one_line(exc)}") from None
        self._conn = conn

    def write(self, batches: dict[Table, list[Row]]) -> int:
        conn = self._conn
        assert conn is not None, "open() first"
        new = 0
        try:
            with conn.transaction():
                for table, rows in batches.items():
                    if not rows:
                        continue
                    with conn.cursor() as cur:
                        with cur.copy(self._copy[table]) as copy:
                            copy.set_types(self._types[table])
                            for row in rows:
                                copy.write_row(row)
                        cur.execute(self._move[table])
                        new += cur.rowcount
        except self._psycopg.OperationalError as exc:
            raise StoreDown(f"PostgreSQL: {_one_line(exc)}") from None
        return new

    def tick(self) -> None:
        """Nothing waits: every write is committed."""

    def held(self) -> Held:
        assert self._conn is not None, "open() first"
        try:
            with self._conn.transaction():
                return [held_topic(t, found) for t in TABLES
                        for found in self._conn.execute(held_query(t, qualified=self._qualified[t]))]
        except self._psycopg.OperationalError as exc:
            raise StoreDown(f"PostgreSQL: {_one_line(exc)}") from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def make(config: PostgresSink, *, plant_partitions: int) -> PostgresStore:  # noqa: ARG001 - the common face
    return PostgresStore(config)
