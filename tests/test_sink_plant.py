"""Sinks inside real plants (`streamctl up`): supervised, visible in `status`, two plants each
owning half of the partitions filling one Kafka log without overlap, and what a sink did not
store (killed, backlog overflowed while its store was down) asked back from the plant's
recovery service, or, when that no longer holds it, counted and reported.

The reference is a subscriber connected all along: the store must hold every bar it saw, once."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from collections import Counter

import pytest
from _common import free_port, wait_until
from _sinks import FAST_RETRY, read_kafka, read_postgres

from streamctl.bus import wire
from streamctl.bus.partitioning import partition_of
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "BRK.B", "ESZ4", "TSLA"]


def _config(name: str, port: int, *, own: str = "", sinks: str, rate: int = 200, recovery: str = "") -> str:
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
publish: {{endpoint: "tcp://127.0.0.1:{port}"{recovery}}}
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


RETRY = "{" + ", ".join(f"{k}: {v}" for k, v in FAST_RETRY.items()) + "}"


class Watch:
    """A subscriber connected all along: every 1 s bar as (symbol, interval, ts_start, close, seq),
    and the sink's events."""

    def __init__(self, port: int, sink: str):
        self.sub = Subscriber(f"tcp://127.0.0.1:{port}")
        self.bars: list[tuple] = []
        self.events: list[wire.Event] = []
        self.sub.on_bar(lambda b: self.bars.append((b.symbol, b.interval, b.ts_start, b.close, b.seq)))
        self.sub.on_event(self.events.append)
        self.sub.subscribe("bar.1s.", f"event.{sink}")

    def until(self, what, timeout: float, why: str):
        return wait_until(what, timeout, why, step=lambda: self.sub.poll(0.05))

    def more_bars(self, n: int) -> None:
        """Wait for `n` more bars than seen so far."""
        want = len(self.bars) + n
        self.until(lambda: len(self.bars) >= want, 60, f"{n} more bars")


def _held_once(stored: list[tuple], seen: list[tuple]) -> list[tuple]:
    """The bars of `seen` the store lacks; asserts the store holds no bar twice."""
    held = Counter(stored)
    assert held and max(held.values()) == 1
    return [bar for bar in seen if bar not in held]


def test_a_sink_killed_in_a_running_plant_is_restarted_and_fills_its_store_from_the_plants_history(plant, tmp_path):
    name, port, db = f"sk{uuid.uuid4().hex[:6]}", free_port(), tmp_path / "cache.db"
    sinks = f'  - {{name: cache, kind: sqlite, path: "{db}", topics: ["bar.1s."], batch_seconds: 0.1}}\n'
    plant.run("up", str(plant.write_config(name, _config(name, port, sinks=sinks))), "--detach", check=True)
    watch = Watch(port, "sink-cache")
    try:
        watch.until(lambda: plant.process(name, "sink-cache")["records_out"] >= 16, 60, "the sink to store bars")
        before = plant.process(name, "sink-cache")
        os.kill(before["pid"], signal.SIGSTOP)  # frozen: what it receives now stays unwritten
        frozen_ns = time.time_ns()  # the sim's bars are on the wall clock: these started after the freeze
        watch.until(lambda: sum(bar[2] >= frozen_ns for bar in watch.bars) >= 8, 60, "bars the sink cannot have")
        os.kill(before["pid"], signal.SIGKILL)  # and dies with it; the plant goes on publishing
        watch.until(lambda: (p := plant.process(name, "sink-cache"))["pid"] != before["pid"] and p["state"] == "ready",
                    60, "the supervisor to restart the sink")
        watch.more_bars(16)
        after = plant.process(name, "sink-cache")
        assert after["restarts"] == 1 and after["drops"]["gaps"] == 0
    finally:
        watch.sub.close()
    plant.run("down", "--name", name, check=True)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT symbol, interval, ts_start, close, seq FROM bars").fetchall()
    assert _held_once(stored, watch.bars) == []


def _postgres_sink(server, schema: str, backlog_rows: int) -> str:
    return (f'  - {{name: db, kind: postgres, port: {server.port}, schema: {schema}, topics: ["bar.1s."], '
            f'batch_seconds: 0.1, backlog_rows: {backlog_rows}, reconnect: {RETRY}}}\n')


def _overflow_while_down(plant, name: str, server, watch: Watch, dropped: int) -> None:
    """Stop the store until the sink has dropped `dropped` rows from its full backlog, then start it."""
    watch.until(lambda: plant.process(name, "sink-db")["records_out"] >= 16, 60, "the sink to store bars")
    server.stop()
    try:
        watch.until(lambda: plant.process(name, "sink-db")["drops"]["overflow"] >= dropped, 90, f"{dropped} rows dropped")
    finally:
        server.start()
    watch.until(lambda: plant.process(name, "sink-db")["state"] == "ready", 60, "the store back")
    watch.more_bars(16)


def test_rows_a_full_backlog_dropped_while_the_store_was_down_come_back_from_the_plants_history(plant,
                                                                                               postgres_server):
    name, port, schema = f"so{uuid.uuid4().hex[:6]}", free_port(), f"t{uuid.uuid4().hex[:10]}"
    config = _config(name, port, sinks=_postgres_sink(postgres_server, schema, backlog_rows=10))
    plant.run("up", str(plant.write_config(name, config)), "--detach", check=True)
    watch = Watch(port, "sink-db")
    try:
        _overflow_while_down(plant, name, postgres_server, watch, dropped=24)
        watch.until(lambda: not _held_once(read_postgres(postgres_server, schema)[0], watch.bars), 60,
                    "the store to hold every bar seen")
        sink = plant.process(name, "sink-db")
    finally:
        watch.sub.close()
    assert sink["drops"]["overflow"] >= 24 and sink["drops"]["gaps"] == 0
    assert not [e for e in watch.events if e.kind == "gap"]
    plant.run("down", "--name", name, check=True)
    assert _held_once(read_postgres(postgres_server, schema)[0], watch.bars) == []


def test_rows_the_plants_history_no_longer_holds_are_counted_and_reported_once(plant, postgres_server):
    name, port, schema = f"sg{uuid.uuid4().hex[:6]}", free_port(), f"t{uuid.uuid4().hex[:10]}"
    # 1 KiB of history per topic and no output journal: about four bars, fewer than the sink drops per symbol
    config = _config(name, port, sinks=_postgres_sink(postgres_server, schema, backlog_rows=8),
                     recovery=", recovery: {topic_bytes: 1024, history: {enabled: false}}")
    plant.run("up", str(plant.write_config(name, config)), "--detach", check=True)
    watch = Watch(port, "sink-db")
    try:
        _overflow_while_down(plant, name, postgres_server, watch, dropped=8 * 8)
        watch.until(lambda: plant.process(name, "sink-db")["consumer_lag"] == 0, 60, "the backlog to drain")
        sink = plant.process(name, "sink-db")
        watch.until(lambda: sum(_lost(e) for e in watch.events if e.kind == "gap") == sink["drops"]["gaps"], 30,
                    "a gap event for every counted loss")
        missing = _held_once(read_postgres(postgres_server, schema)[0], watch.bars)
    finally:
        watch.sub.close()
    assert 0 < sink["drops"]["gaps"] < sink["drops"]["overflow"]  # some came back from history, the oldest were gone
    assert len(missing) == sink["drops"]["gaps"]  # exactly what was counted is missing
    gaps = [e.message.split(":")[0] for e in watch.events if e.kind == "gap"]
    assert len(gaps) == len(set(gaps))  # each topic's seq range reported once
    for symbol, interval, _, _, seq in missing:  # and each missing bar is in a reported range
        assert any(g.startswith(f"`bar.{interval}.{symbol}` seq ") and _in_range(g, seq) for g in gaps)
    plant.run("down", "--name", name, check=True)


def _lost(event: wire.Event) -> int:
    """How many messages a sink's ``gap`` event (```topic` seq A..B: N messages ...``) reports lost."""
    return int(event.message.split(": ")[1].split()[0])


def _in_range(gap: str, seq: int) -> bool:
    first, last = gap.rpartition(" seq ")[2].split("..")
    return int(first) <= seq <= int(last)
