"""Sinks inside real plants (`streamctl up`): supervised, visible in `status`, and two plants
each owning half of the partitions filling one Kafka log without overlap."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter

import pytest
from _common import free_port, wait_until
from _sinks import read_kafka

from streamctl.bus.partitioning import partition_of
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "BRK.B", "ESZ4", "TSLA"]


def _config(name: str, port: int, *, own: str = "", sinks: str, rate: int = 200) -> str:
    return f"""\
name: {name}
feeds:
  - name: sim
    vendor: sim
    symbols: [{", ".join(SYMBOLS)}]
    options: {{rate: {rate}, seed: 11}}
partitions: {{count: 4{own}}}
calculators:
  bars: {{time: [1s], close_delay: 0.1}}
publish: {{endpoint: "tcp://127.0.0.1:{port}"}}
rings: {{capacity: 16384}}
sinks:
{sinks}"""


def test_a_sink_is_a_supervised_process_and_stores_what_subscribers_see(plant, tmp_path):
    name, port, db = f"sp{uuid.uuid4().hex[:6]}", free_port(), tmp_path / "cache.db"
    sinks = f'  - {{name: cache, kind: sqlite, path: "{db}", topics: ["bar.1s.", "trade."], batch_seconds: 0.1}}\n'
    config = plant.write_config(name, _config(name, port, sinks=sinks))
    plant.run("up", str(config), "--detach", check=True)
    seen: list[tuple] = []
    with Subscriber(f"tcp://127.0.0.1:{port}") as sub:
        sub.on_bar(lambda b: seen.append((b.symbol, b.interval, b.ts_start, b.close)))
        sub.subscribe("bar.1s.")
        sub.run(count=30, timeout=60)
    row = wait_until(lambda: (p := plant.process(name, "sink-cache"))["records_out"] > 0 and p, 30,
                     "the sink to store rows")
    assert row["role"] == "sink" and row["state"] == "ready" and row["errors"] == 0
    assert row["store_lag_s"] is not None and row["consumer_lag"] >= 0
    table = plant.run("status", "--name", name, check=True).stdout
    assert "sink-cache" in table and "store lag" in table
    plant.run("down", "--name", name, check=True)  # the sink stops after the workers: their last bars are in
    with sqlite3.connect(db) as conn:
        stored = Counter(conn.execute("SELECT symbol, interval, ts_start, close FROM bars"))
        trades = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    assert len(seen) == 30 and all(stored[bar] == 1 for bar in seen)
    assert max(stored.values()) == 1 and trades > 0


def test_two_plants_each_owning_half_of_the_partitions_fill_one_kafka_log_exactly_once(plant, kafka_broker):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    sinks = (f'  - {{name: log, kind: kafka, bootstrap: "{kafka_broker.bootstrap}", topic_prefix: "{prefix}", '
             f'topics: ["bar.1s."], batch_seconds: 0.1}}\n')
    names = []
    for own in ("[0, 1]", "[2, 3]"):
        name, port = f"own{uuid.uuid4().hex[:6]}", free_port()
        config = plant.write_config(name, _config(name, port, own=f", own: {own}", sinks=sinks))
        plant.run("up", str(config), "--detach", check=True)
        names.append(name)
    for name in names:
        wait_until(lambda n=name: plant.process(n, "sink-log")["records_out"] >= 12, 60, "bars in the log")
        workers = sorted(p["name"] for p in plant.status(name)["processes"] if p["role"] == "worker")
        assert workers == (["worker-0", "worker-1"] if name == names[0] else ["worker-2", "worker-3"])
    for name in names:
        plant.run("down", "--name", name, check=True)
    bars, _ = read_kafka(kafka_broker.bootstrap, prefix)  # asserts each bar is in its symbol's partition
    keys = Counter((symbol, interval, ts_start) for symbol, interval, ts_start, _, _ in bars)
    assert keys and max(keys.values()) == 1  # no bar twice, though both plants read every symbol
    assert {symbol for symbol, _, _ in keys} == set(SYMBOLS)
    assert {partition_of(s, 4) for s in SYMBOLS} == {0, 1, 2, 3}  # both plants had symbols to sink
