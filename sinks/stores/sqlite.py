"""SQLite: the stream-to-cache store, one file in WAL mode, queryable while the sink writes.

A batch is one transaction of ``INSERT OR IGNORE`` into tables whose primary key is the natural
key, so a batch written twice (a restart, a retry) adds nothing, and a sink killed mid-batch
leaves either all of it or none.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from streamctl.sinks.rows import TABLES, Row, Table
from streamctl.sinks.settings import SqliteSink
from streamctl.sinks.stores import Held, StoreDown
from streamctl.sinks.stores.sql import column_list, create_table, held_query, held_topic

__all__ = ["SqliteStore", "make"]


class SqliteStore:
    """Rows into an SQLite file (see the module docstring)."""

    def __init__(self, config: SqliteSink):
        self.path = Path(config.path)
        self._db: sqlite3.Connection | None = None
        self._insert = {t: f"INSERT OR IGNORE INTO {t.name} ({column_list(t)}) VALUES "
                           f"({', '.join('?' * len(t.columns))})" for t in TABLES}

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed batch survives a process kill
            for table in TABLES:
                db.execute(create_table(table, "sqlite"))
        except (sqlite3.OperationalError, OSError) as exc:
            raise StoreDown(f"cannot open {self.path}: {exc}") from None
        self._db = db

    def write(self, batches: dict[Table, list[Row]]) -> int:
        db = self._db
        assert db is not None, "open() first"
        try:
            before = db.total_changes
            db.execute("BEGIN")
            for table, rows in batches.items():
                if rows:
                    db.executemany(self._insert[table], rows)
            db.execute("COMMIT")
            return db.total_changes - before
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, file gone
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreDown(f"{self.path}: {exc}") from None

    def tick(self) -> None:
        """Nothing waits: every write is committed."""

    def held(self) -> Held:
        assert self._db is not None, "open() first"
        return [held_topic(t, found) for t in TABLES for found in self._db.execute(held_query(t))]

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def make(config: SqliteSink, *, plant_partitions: int) -> SqliteStore:  # noqa: ARG001 - the common face
    return SqliteStore(config)
