"""Helpers of the sink tests: a sink process on a real proxy, the stream a test plays through
it, and readers that take rows back out of each store with that store's own client."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from _common import wait_until
from _pubsub import CTX
from _shmutil import unique_plant

from streamctl.bus import wire
from streamctl.bus.publisher import Publisher
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import ProcessTable, State
from streamctl.sinks.process import SinkSpec, sink_main

__all__ = ["SinkProcess", "make_stream", "play", "BarKey", "TradeKey", "read_sqlite", "read_parquet", "read_kafka",
           "read_postgres", "read_redis", "FAST_RETRY"]

START_TIMEOUT = 60.0
FAST_RETRY = {"delays": [0.2, 0.4], "max_delay": 0.5, "jitter": 0.0, "max_failures": 200}
"""The plant's reconnect policy, with short waits so a test sees several attempts quickly."""

BarKey = tuple[str, str, int, float, int]
"""(symbol, interval, ts_start, close, seq) of a bar."""
TradeKey = tuple[str, int, int, float, int]
"""(symbol, ts_event, ts_recv, price, seq) of a trade."""


class SinkProcess:
    """`streamctl.sinks.process.sink_main` in its own process, with a process table of one slot
    that the test owns (as the supervisor would)."""

    def __init__(self, sink: Any, proxy, *, plant_partitions: int = 4):
        self.plant = unique_plant("sk")
        self.table = ProcessTable.create(segment_name(self.plant, "stats"), 1, plant=self.plant)
        self.spec = SinkSpec(plant=self.plant, slot=0, stats=self.table.name, sink=sink, endpoint=proxy.backend,
                             events_endpoint=proxy.frontend, plant_partitions=plant_partitions)
        self.proc: Any = None

    def start(self) -> SinkProcess:
        self.table.slot(0).set("state", State.STARTING)  # as the supervisor does before each start
        self.proc = CTX.Process(target=sink_main, args=(self.spec,), daemon=True)
        self.proc.start()
        wait_until(lambda: self._alive() and self.state() in (State.READY, State.RECONNECTING), START_TIMEOUT,
                   "the sink to report ready")
        return self

    def _alive(self) -> bool:
        if self.proc.exitcode is not None:
            raise AssertionError(f"sink exited with {self.proc.exitcode}: {self.get('detail')}")
        return True

    def state(self) -> State:
        return self.table.slot(0).get("state")

    def get(self, field: str) -> Any:
        return self.table.slot(0).get(field)

    def kill(self) -> None:
        """SIGKILL, the way a crash ends it: nothing is flushed."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)

    def stop(self) -> int | None:
        """The supervisor's polite stop (SIGTERM); the exit code."""
        if self.proc is not None and self.proc.exitcode is None:
            self.proc.terminate()
            self.proc.join(30)
            if self.proc.exitcode is None:
                self.proc.kill()
                self.proc.join(5)
        return None if self.proc is None else self.proc.exitcode

    def close(self) -> None:
        self.stop()
        self.table.close()
        self.table.unlink()


def make_stream(n_bars: int, *, symbols=("AAPL", "MSFT", "BRK.B", "ESZ4"), trades_per_bar: int = 3,
                start_ns: int = 1_700_000_000_000_000_000) -> list[tuple[str, Any]]:
    """A plant's output for `n_bars` seconds: per second and symbol, a trade array then its 1 s
    bar (publish order; the publisher stamps seq and src)."""
    items: list[tuple[str, Any]] = []
    for i in range(n_bars):
        for k, symbol in enumerate(symbols):
            t0 = start_ns + i * 1_000_000_000
            price = 100.0 + k + (i % 17) * 0.25
            trades = [wire.Trade(symbol=symbol, ts_event=t0 + j * 1000 + 7, ts_recv=t0 + j * 1000 + 9,
                                 price=price + j * 0.01, size=1.5 + j, side="BSN"[j % 3]) for j in range(trades_per_bar)]
            items.append((wire.topic("trade", symbol), trades))
            items.append((wire.topic("bar", symbol, "1s"), wire.Bar(
                symbol=symbol, interval="1s", ts_start=t0, ts_end=t0 + 1_000_000_000, open=price, high=price + 0.5,
                low=price - 0.5, close=price + 0.01, volume=10.0 + i, trades=trades_per_bar, vwap=price,
                ts_event=t0 + 999, ts_recv=t0 + 1001)))
    return items


def play(publisher: Publisher, items: list[tuple[str, Any]]) -> None:
    """Publish `items` in order (copies: the publisher stamps seq and src into what it sends)."""
    for topic, payload in items:
        if isinstance(payload, list):
            publisher.publish_batch(topic, [msgspec.structs.replace(p) for p in payload])
        else:
            publisher.publish(topic, msgspec.structs.replace(payload))


class Seen:
    """What a plain subscriber saw, as the same key tuples the readers return."""

    def __init__(self, sub) -> None:
        self.bars: list[BarKey] = []
        self.trades: list[TradeKey] = []
        sub.on_bar(lambda b: self.bars.append((b.symbol, b.interval, b.ts_start, b.close, b.seq)))
        sub.on_trade(lambda t: self.trades.append((t.symbol, t.ts_event, t.ts_recv, t.price, t.seq)))


def read_sqlite(path: Path) -> tuple[list[BarKey], list[TradeKey]]:
    db = sqlite3.connect(path)
    try:
        bars = db.execute("SELECT symbol, interval, ts_start, close, seq FROM bars").fetchall()
        trades = db.execute("SELECT symbol, ts_event, ts_recv, price, seq FROM trades").fetchall()
    finally:
        db.close()
    return [tuple(r) for r in bars], [tuple(r) for r in trades]  # type: ignore[misc]


def read_parquet(path: Path) -> tuple[list[BarKey], list[TradeKey]]:
    """With pandas over the Hive dataset, as docs/sinks.md shows."""
    import pandas as pd

    out: list[list[Any]] = []
    for kind, cols in (("bar", ["symbol", "interval", "ts_start", "close", "seq"]),
                       ("trade", ["symbol", "ts_event", "ts_recv", "price", "seq"])):
        folder = path / f"kind={kind}"
        if not any(folder.rglob("*.parquet")):  # nothing written yet (a folder may exist before its first file)
            out.append([])
            continue
        frame = pd.read_parquet(folder)
        frame["symbol"] = frame["symbol"].astype(str)
        out.append([tuple(r) for r in frame[cols].itertuples(index=False, name=None)])
    return out[0], out[1]


def read_postgres(server, schema: str) -> tuple[list[BarKey], list[TradeKey]]:
    with server.connect() as conn:
        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".trades',)).fetchone()[0] is None:
            return [], []  # the sink has not created its tables yet
        bars = conn.execute(f'SELECT symbol, interval, ts_start, close, seq FROM "{schema}".bars').fetchall()
        trades = conn.execute(f'SELECT symbol, ts_event, ts_recv, price, seq FROM "{schema}".trades').fetchall()
    return [tuple(r) for r in bars], [tuple(r) for r in trades]  # type: ignore[misc]


def read_redis(server, prefix: str) -> tuple[list[BarKey], list[TradeKey]]:
    client = server.client()
    bars: list[BarKey] = []
    trades: list[TradeKey] = []
    for key in client.scan_iter(match=f"{prefix}*", _type="stream"):
        for _, f in client.xrange(key):
            d = msgspec.msgpack.decode(f[b"row"])
            if key.decode().startswith(f"{prefix}bar."):
                bars.append((d["symbol"], d["interval"], d["ts_start"], d["close"], d["seq"]))
            else:
                trades.append((d["symbol"], d["ts_event"], d["ts_recv"], d["price"], d["seq"]))
    client.close()
    return bars, trades


Reader = Callable[[], tuple[list[BarKey], list[TradeKey]]]


def read_kafka(bootstrap: str, prefix: str, *, partitions: int = 4) -> tuple[list[BarKey], list[TradeKey]]:
    """Every message of `<prefix>bars` and `<prefix>trades`, read with a plain consumer; each
    must sit in the partition the plant's partitioner gives its key, with seq/src headers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    from streamctl.bus.partitioning import partition_of

    existing = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    out: list[list[Any]] = []
    for table, cols in (("bars", ["symbol", "interval", "ts_start", "close", "seq"]),
                        ("trades", ["symbol", "ts_event", "ts_recv", "price", "seq"])):
        rows: list[Any] = []
        out.append(rows)
        if f"{prefix}{table}" not in existing:
            continue
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        consumer.assign([TopicPartition(f"{prefix}{table}", p, OFFSET_BEGINNING) for p in range(partitions)])
        left = set(range(partitions))
        while left:
            msg = consumer.poll(10)
            assert msg is not None, "the broker stopped answering"
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(msg.error())
                left.discard(msg.partition())
                continue
            d = msgspec.msgpack.decode(msg.value())
            assert msg.key() == d["symbol"].encode()
            assert msg.partition() == partition_of(d["symbol"], partitions)
            assert dict(msg.headers()) == {"seq": str(d["seq"]).encode(), "src": d["src"].encode()}
            rows.append(tuple(d[c] for c in cols))
        consumer.close()
    return out[0], out[1]
