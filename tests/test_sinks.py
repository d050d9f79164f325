"""Sinks end to end, per store kind: a real sink process on a real proxy, writing into a real
store (SQLite and Parquet files, PostgreSQL and Redis servers started by the tests), read back
with each store's own client.

The stream a test plays is what a plant's worker publishes (trade arrays and 1 s bars). What
a plain subscriber saw is the reference: the store must hold exactly those rows, none twice.
The test proxy runs no recovery service. Where a test plays the stream a second time (with the
original seq and src), it proves each store's writes idempotent across a restart;
tests/test_sink_plant.py has sinks refilled from a real plant's history.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import msgspec
import pytest
import zmq
from _common import wait_until
from _sinks import (
    FAST_RETRY,
    Seen,
    SinkProcess,
    make_stream,
    play,
    read_kafka,
    read_parquet,
    read_postgres,
    read_redis,
    read_sqlite,
)

from streamctl.bus import wire
from streamctl.bus.publisher import Publisher
from streamctl.client import Subscriber
from streamctl.shm.stats import State
from streamctl.sinks.settings import SinkConfig

pytestmark = pytest.mark.timeout(180)

FILE_KINDS = ["sqlite", "parquet"]
SERVER_KINDS = ["postgres", "redis"]
"""Servers that keep their data across a restart (the Kafka broker the tests run keeps it in memory)."""
ALL_KINDS = FILE_KINDS + SERVER_KINDS + ["kafka"]


class Case:
    """A sink config of one kind, the reader of its store, and its server (None for files)."""

    def __init__(self, kind: str, request, tmp_path, **overrides):
        self.kind = kind
        tag = f"t{uuid.uuid4().hex[:10]}"
        options: dict = {}
        self.server = None
        if kind == "sqlite":
            options = {"path": str(tmp_path / "plant.db")}
            self.read = lambda: read_sqlite(tmp_path / "plant.db")
        elif kind == "parquet":
            options = {"path": str(tmp_path / "lake"), "roll_rows": 40, "roll_seconds": 0.2}
            self.read = lambda: read_parquet(tmp_path / "lake")
        elif kind == "postgres":
            self.server = request.getfixturevalue("postgres_server")
            options = {"port": self.server.port, "schema": tag}
            self.read = lambda: read_postgres(self.server, tag)
        elif kind == "redis":
            self.server = request.getfixturevalue("redis_server")
            options = {"port": self.server.port, "prefix": f"{tag}:"}
            self.read = lambda: read_redis(self.server, f"{tag}:")
        elif kind == "kafka":
            self.server = request.getfixturevalue("kafka_broker")
            options = {"bootstrap": self.server.bootstrap, "topic_prefix": f"{tag}."}
            self.read = lambda: read_kafka(self.server.bootstrap, f"{tag}.")
        self.config = msgspec.convert({"kind": kind, "name": "t", "topics": ["bar.", "trade."], "batch_rows": 50,
                                       "batch_seconds": 0.05, "reconnect": FAST_RETRY, **options, **overrides},
                                      SinkConfig)

    def holds(self, seen: Seen) -> bool:
        """The store holds exactly what `seen` saw (as multisets: nothing twice)."""
        return self.holds_rows(seen.bars, seen.trades)

    def holds_rows(self, bars: list, trades: list) -> bool:
        held_bars, held_trades = self.read()
        return Counter(held_bars) == Counter(bars) and Counter(held_trades) == Counter(trades)

    def restore(self) -> None:
        """Leave the shared server running for the next test, whatever happened."""
        if self.server is not None and self.server.proc is None:
            self.server.start()


@pytest.fixture
def session(proxy, cleanup):
    """A subscriber (the reference) and a publisher (a plant's worker) on the proxy, in sync."""
    sub = Subscriber(proxy.backend)
    cleanup.append(sub)
    seen = Seen(sub)
    sub.subscribe("bar.", "trade.")
    pub = Publisher(proxy.frontend, src="worker-0")
    cleanup.append(pub)
    _sync(pub, sub)
    return pub, sub, seen


def _sync(pub: Publisher, sub: Subscriber) -> None:
    """Publish probes until the subscriber sees one: every subscription made before is in place."""
    got: list[wire.Event] = []
    sub.on_event(got.append)
    sub.subscribe(f"event.{pub.src}")
    wait_until(lambda: got, 30, "a probe through the proxy",
               step=lambda: (pub.publish(f"event.{pub.src}", wire.Event(source=pub.src, kind="probe", message="",
                                                                      ts=time.time_ns())), sub.poll(0.05)))
    sub.unsubscribe(f"event.{pub.src}")


def _start_sink(case: Case, proxy, cleanup) -> SinkProcess:
    sink = SinkProcess(case.config, proxy).start()
    cleanup.append(sink)
    return sink


def _drain(sub: Subscriber, seen: Seen, bars: int, trades: int) -> None:
    wait_until(lambda: len(seen.bars) >= bars and len(seen.trades) >= trades, 60, "the subscriber to see the stream",
               step=lambda: sub.poll(0.05))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_the_store_holds_what_a_subscriber_saw(kind, request, tmp_path, proxy, session, cleanup):
    case = Case(kind, request, tmp_path)
    sink = _start_sink(case, proxy, cleanup)
    pub, sub, seen = session
    stream = make_stream(30)
    play(pub, stream)
    _drain(sub, seen, 120, 360)
    wait_until(lambda: case.holds(seen), 60, f"the {kind} store to hold the stream")
    assert len(seen.bars) == 120 and len(seen.trades) == 360
    assert sink.get("records_in") == 480 and sink.get("records_out") == 480
    assert sink.get("gaps") == sink.get("overflow") == sink.get("errors") == 0
    wait_until(lambda: sink.get("backlog") == 0, 10, "the backlog to empty")
    assert sink.stop() == 0
    assert case.holds(seen)  # a polite stop adds nothing and loses nothing
    if kind == "redis":  # the last-value hash of a topic is its newest row
        last = case.server.client().hgetall(f"{case.config.prefix}last:bar.1s.BRK.B")
        newest = max(b for b in seen.bars if b[0] == "BRK.B")
        assert (last[b"ts_start"], last[b"close"], last[b"seq"]) == tuple(str(v).encode() for v in newest[2:])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_sink_killed_mid_stream_resumes_with_no_row_missing_or_twice(kind, request, tmp_path, proxy, session,
                                                                       cleanup):
    case = Case(kind, request, tmp_path)
    sink = _start_sink(case, proxy, cleanup)
    pub, sub, seen = session
    stream = make_stream(40)
    play(pub, stream[:100])
    wait_until(lambda: len(case.read()[0]) >= 5, 60, "the store to hold some bars")
    sink.kill()
    play(pub, stream[100:])  # published while the sink is dead: lost to it
    _drain(sub, seen, 160, 480)
    bars, trades = list(seen.bars), list(seen.trades)  # the stream, once
    assert not case.holds_rows(bars, trades)
    sink.start()
    # Everything again, with the original seq and src: rows the dead sink wrote are not doubled.
    with Publisher(pub.endpoint, src="worker-0") as history:
        history.wait_subscribed(10)
        play(history, stream)
    wait_until(lambda: case.holds_rows(bars, trades), 60, f"the {kind} store to hold the stream once")
    assert sink.stop() == 0
    assert case.holds_rows(bars, trades)


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_store_restarted_mid_stream_loses_nothing_and_doubles_nothing(kind, request, tmp_path, proxy, session,
                                                                        cleanup):
    case = Case(kind, request, tmp_path)
    sink = _start_sink(case, proxy, cleanup)
    pub, sub, seen = session
    stream = make_stream(60)
    try:
        play(pub, stream[:120])
        wait_until(lambda: len(case.read()[0]) >= 10, 60, "the store to hold some bars")
        case.server.stop()
        play(pub, stream[120:360])
        wait_until(lambda: sink.state() == State.RECONNECTING and sink.get("backlog") > 0, 60,
                   "the sink to hold a backlog while the store is down")
        case.server.start()
        play(pub, stream[360:])
        _drain(sub, seen, 240, 720)
        wait_until(lambda: case.holds(seen), 60, f"the {kind} store to hold the whole stream once")
    finally:
        case.restore()
    assert sink.get("reconnects") >= 1 and sink.get("errors") >= 1
    assert sink.get("overflow") == 0 and sink.get("gaps") == 0
    assert sink.state() == State.READY


@pytest.mark.parametrize("kind", SERVER_KINDS + ["kafka"])
def test_a_store_down_at_start_is_retried_with_the_reconnect_policy(kind, request, tmp_path, proxy, session,
                                                                    cleanup):
    case = Case(kind, request, tmp_path)
    case.server.stop()
    try:
        sink = _start_sink(case, proxy, cleanup)
        assert sink.state() == State.RECONNECTING
        wait_until(lambda: sink.get("errors") >= 2, 30, "a second failed attempt")  # it goes on trying
        pub, sub, seen = session
        play(pub, make_stream(10))
        _drain(sub, seen, 40, 120)
        wait_until(lambda: sink.get("backlog") == 160, 30, "every row waiting in the backlog")
        case.server.start()
        wait_until(lambda: case.holds(seen), 60, f"the {kind} store to hold the stream")
    finally:
        case.restore()
    assert sink.state() == State.READY and sink.get("reconnects") == 1


def test_a_store_that_stays_down_fails_the_sink_after_max_failures(tmp_path, request, proxy, cleanup):
    case = Case("postgres", request, tmp_path, reconnect={**FAST_RETRY, "max_failures": 2})
    case.server.stop()
    try:
        sink = _start_sink(case, proxy, cleanup)
        wait_until(lambda: sink.proc.exitcode is not None, 30, "the sink to give up")
    finally:
        case.restore()
    assert sink.proc.exitcode == 3
    assert sink.state() == State.FAILED
    assert "after 2 attempts" in sink.get("detail")


def test_a_full_backlog_counts_overflow_and_reports_what_no_history_gives_back(tmp_path, request, proxy, session,
                                                                             cleanup):
    """The test proxy runs no recovery service: once the store is back, the dropped rows are asked
    for, not found, and counted as gaps, one event per topic and seq range."""
    case = Case("postgres", request, tmp_path, backlog_rows=100)
    case.server.stop()
    events: list[wire.Event] = []
    try:
        pub, sub, seen = session
        sub.on_event(events.append)
        # Before the sink starts: the test proxy has no recovery service, so subscriptions flow up
        # to the publishers, and one made later could reach the sink after its overflow event.
        sub.subscribe("event.sink-t")
        sink = _start_sink(case, proxy, cleanup)
        play(pub, make_stream(25))  # 400 rows
        _drain(sub, seen, 100, 300)
        wait_until(lambda: sink.get("overflow") == 300, 30, "300 rows counted as overflow")
        assert sink.get("backlog") == 100 and sink.get("gaps") == 0  # not lost yet: asked for once the store is back
        wait_until(lambda: any(e.kind == "error" for e in events), 30, "the overflow reported",
                   step=lambda: sub.poll(0.05))
    finally:
        case.restore()
    wait_until(lambda: sink.get("gaps") == 300, 60, "the 300 dropped rows counted as gaps")
    wait_until(lambda: len(case.read()[0]) + len(case.read()[1]) == 100, 60, "the kept 100 rows in the store")
    assert "backlog full (100 rows)" in next(e for e in events if e.kind == "error").message
    wait_until(lambda: sum(_gap_count(e) for e in events if e.kind == "gap") == 300, 30, "gap events for all 300",
               step=lambda: sub.poll(0.05))
    ranges = [e.message.split(":")[0] for e in events if e.kind == "gap"]
    assert len(ranges) == len(set(ranges)) and all(e.source == "sink-t" for e in events)


def _gap_count(event: wire.Event) -> int:
    """The messages a sink's ``gap`` event says are lost (```topic` seq A..B: N messages ...``)."""
    return int(event.message.split(": ")[1].split()[0])


def test_a_sequence_gap_is_counted_and_reported(tmp_path, request, proxy, session, cleanup):
    case = Case("sqlite", request, tmp_path)
    sink = _start_sink(case, proxy, cleanup)
    _, sub, _ = session
    events: list[wire.Event] = []
    sub.on_event(events.append)
    sub.subscribe("event.sink-t")
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.XPUB)  # a publisher whose seq jumps from 2 to 6, as after a HWM drop
    raw.linger = 0
    raw.connect(proxy.frontend)
    cleanup.append(raw)
    bar = make_stream(6, symbols=("AAPL",))[1::2]
    encode = msgspec.msgpack.Encoder().encode

    def send(seq: int, payload) -> None:
        raw.send_multipart([wire.topic_frame("bar.1s.AAPL"),
                            encode(msgspec.structs.replace(payload, seq=seq, src="worker-9"))])

    wait_until(lambda: raw.poll(100) and raw.recv()[1:] == wire.SYNC_SUBSCRIPTION, 30, "the proxy's subscriptions")
    for seq, (_, payload) in zip([1, 2, 6], bar, strict=False):
        send(seq, payload)
    wait_until(lambda: sink.get("gaps") == 3, 30, "the gap counted", step=lambda: sub.poll(0.05))
    wait_until(lambda: any(e.kind == "gap" for e in events), 30, "a gap event", step=lambda: sub.poll(0.05))
    assert next(e for e in events if e.kind == "gap").message.startswith("`bar.1s.AAPL` seq 3..5: 3 messages")
    wait_until(lambda: len(case.read()[0]) == 3, 30, "the 3 bars that came")


def test_the_parquet_dataset_reads_in_duckdb_and_polars(tmp_path, request, proxy, session, cleanup):
    """The layout docs/sinks.md promises: Hive partitions `kind=/date=/symbol=`, whole files only."""
    import duckdb
    import polars as pl

    case = Case("parquet", request, tmp_path)
    sink = _start_sink(case, proxy, cleanup)
    pub, sub, seen = session
    play(pub, make_stream(5))
    _drain(sub, seen, 20, 60)
    assert sink.stop() == 0  # a stop writes every open file
    lake = tmp_path / "lake"
    assert not list(lake.rglob("*.partial"))
    assert {p.parent.name for p in lake.rglob("*.parquet")} == {"symbol=AAPL", "symbol=MSFT", "symbol=BRK.B",
                                                               "symbol=ESZ4"}
    assert {p.parent.parent.name for p in lake.rglob("*.parquet")} == {"date=2023-11-14"}
    con = duckdb.connect()
    got = con.execute(f"SELECT symbol, interval, ts_start, close, seq FROM read_parquet('{lake}/kind=bar/*/*/*.parquet',"
                      " hive_partitioning = true)").fetchall()
    assert Counter(got) == Counter(seen.bars)
    frame = pl.scan_parquet(lake / "kind=trade", hive_partitioning=True).collect()
    assert Counter(frame.select("symbol", "ts_event", "ts_recv", "price", "seq").iter_rows()) == Counter(seen.trades)
