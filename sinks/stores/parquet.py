"""Parquet: the embedded default, a Hive-partitioned dataset any dataframe library reads.

Layout: ``PATH/kind=bar/date=2024-03-01/symbol=AAPL/part-<first ts>-<id>.parquet`` (``date`` is
the UTC day of the row's event time; ``kind`` and ``symbol`` live in the path only). Rows wait
in one open buffer per partition folder, which is written as one file once it holds
`roll_rows` rows or is `roll_seconds` old, and at stop. A file is written under a name no
reader lists (``.<id>.partial``), synced, then renamed: a reader never sees half a file, and a
sink killed mid-write leaves only a ``.partial`` that the next start removes.

Idempotence: at open the store reads the natural-key columns of every file into memory, and a
row whose key is already there is not buffered again. Rows in open buffers are not durable
until their file is written: after a SIGKILL they are missing from the store, which `held`
shows, so the restarted sink asks the plant's history for them.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamctl.sinks.rows import TABLES, Row, Table
from streamctl.sinks.settings import ParquetSink
from streamctl.sinks.stores import Held, StoreDown, require

__all__ = ["ParquetStore", "make"]

_PA_TYPES = {"text": "string", "int": "int64", "float": "float64", "float?": "float64"}


class _Buffer:
    __slots__ = ("rows", "opened")

    def __init__(self, opened: float):
        self.rows: list[Row] = []
        self.opened = opened


class ParquetStore:
    """Rows into a Hive-partitioned Parquet dataset (see the module docstring)."""

    def __init__(self, config: ParquetSink, *, clock=time.monotonic):
        self.root = Path(config.path)
        self.config = config
        self._clock = clock
        self._pa: Any = require("pyarrow", "pyarrow", "parquet")
        self._pq: Any = require("pyarrow.parquet", "pyarrow", "parquet")
        self._keys: dict[Table, set[tuple]] = {t: set() for t in TABLES}
        self._latest: dict[tuple[str, str], tuple[int, int]] = {}
        """(topic, src) -> (order, seq) of the newest durable row, for `held`."""
        self._buffers: dict[tuple[Table, str, str], _Buffer] = {}
        self._key_of = {t: t.key_of() for t in TABLES}
        self._schemas = {t: self._pa.schema([(n, _PA_TYPES[k]) for n, k in t.columns if n != "symbol"])
                         for t in TABLES}

    # ------------------------------------------------------------------ open
    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for table in TABLES:
                self._keys[table].clear()
                for path in sorted((self.root / f"kind={table.kind}").glob("date=*/symbol=*/*")):
                    if path.name.endswith(".partial"):
                        path.unlink()  # a write cut short by a kill: its rows were never durable
                    elif path.suffix == ".parquet":
                        self._load(table, path)
            for (table, _, _), buffer in self._buffers.items():  # reopened after a failed roll: still ours
                self._keys[table].update(map(self._key_of[table], buffer.rows))
        except OSError as exc:
            raise StoreDown(f"cannot open the dataset at {self.root}: {exc}") from None

    def _load(self, table: Table, path: Path) -> None:
        symbol = path.parent.name.removeprefix("symbol=")
        names = [c for c in table.key if c != "symbol"] + ["src", "seq", _order_column(table)]
        data = self._pq.read_table(path, columns=list(dict.fromkeys(names))).to_pydict()
        n = len(data["seq"])
        keys = self._keys[table]
        for i in range(n):
            row = {c: data[c][i] for c in data} | {"symbol": symbol}
            keys.add(tuple(row[c] for c in table.key))
            self._note_latest(table, symbol, row)

    def _note_latest(self, table: Table, symbol: str, row: dict[str, Any]) -> None:
        interval = row.get("interval")
        topic = table.topic((symbol, interval))
        mark = (int(row[_order_column(table)]), int(row["seq"]))
        key = (topic, str(row["src"]))
        if mark > self._latest.get(key, (-1, -1)):
            self._latest[key] = mark

    # ------------------------------------------------------------------ write
    def write(self, batches: dict[Table, list[Row]]) -> int:
        now = self._clock()
        new = 0
        for table, rows in batches.items():
            keys, key_of = self._keys[table], self._key_of[table]
            t_index = table.index(table.time_column)
            for row in rows:
                key = key_of(row)
                if key in keys:
                    continue
                keys.add(key)
                day = datetime.fromtimestamp(row[t_index] / 1e9, UTC).strftime("%Y-%m-%d")
                buffer = self._buffers.get((table, day, row[0]))
                if buffer is None:
                    buffer = self._buffers[table, day, row[0]] = _Buffer(now)
                buffer.rows.append(row)
                new += 1
        self.tick()
        return new

    def tick(self) -> None:
        """Write every buffer that is full or old enough."""
        now = self._clock()
        for where, buffer in list(self._buffers.items()):
            if len(buffer.rows) >= self.config.roll_rows or now - buffer.opened >= self.config.roll_seconds:
                self._roll(where)

    def _roll(self, where: tuple[Table, str, str]) -> None:
        table, day, symbol = where
        buffer = self._buffers[where]
        folder = self.root / f"kind={table.kind}" / f"date={day}" / f"symbol={symbol}"
        rows = buffer.rows
        columns = list(zip(*rows, strict=True))
        data = {name: list(columns[i]) for i, name in enumerate(table.names) if name != "symbol"}
        arrow = self._pa.Table.from_pydict(data, schema=self._schemas[table])
        first = rows[0][table.index(table.time_column)]
        name = f"part-{first}-{uuid.uuid4().hex[:12]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{name}.partial"
            self._pq.write_table(arrow, partial, compression="zstd")
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, folder / f"{name}.parquet")
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StoreDown(f"cannot write {folder}: {exc}") from None
        del self._buffers[where]
        names = table.names
        for row in rows:
            self._note_latest(table, symbol, dict(zip(names, row, strict=True)))

    # ------------------------------------------------------------------ rest
    def held(self) -> Held:
        return [(topic, src, seq) for (topic, src), (_, seq) in sorted(self._latest.items())]

    def close(self) -> None:
        """Write every open buffer."""
        for where in list(self._buffers):
            self._roll(where)


def _order_column(table: Table) -> str:
    return "ts_start" if table.kind == "bar" else "ts_recv"


def make(config: ParquetSink, *, plant_partitions: int) -> ParquetStore:  # noqa: ARG001 - the common face
    return ParquetStore(config)
