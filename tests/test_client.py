"""The subscriber client against a real proxy process and real publishers (ours, and raw
pyzmq PUB sockets sending crafted payloads where a test needs a gap or garbage)."""

from __future__ import annotations

import asyncio
import time

import msgpack
import msgspec
import pytest
import zmq
from _pubsub import CTX, ProxyProcess, probe, publisher_main, reap, wait_until

from streamctl.bus import wire
from streamctl.bus.publisher import Publisher
from streamctl.client import (
    Anomaly,
    Bar,
    Book,
    DecodeError,
    Event,
    Indicator,
    Quote,
    Reconnect,
    SequenceGap,
    Status,
    Subscriber,
    Trade,
    Vwap,
)


def bar(symbol: str, close: float) -> Bar:
    return Bar(symbol=symbol, interval="60s", ts_start=0, ts_end=60, open=close, high=close, low=close, close=close,
               volume=2.0, trades=1, vwap=close, ts_event=1, ts_recv=2)


def trade(symbol: str, price: float) -> Trade:
    return Trade(symbol=symbol, ts_event=1, ts_recv=2, price=price, size=1.0, side="B")


ONE_OF_EACH: list[tuple[str, object]] = [
    ("bar.60s.AAPL", bar("AAPL", 1.5)),
    ("trade.AAPL", [trade("AAPL", 1.0), trade("AAPL", 2.0), trade("AAPL", 3.0)]),
    ("quote.AAPL", [Quote(symbol="AAPL", ts_event=1, ts_recv=2, bid=1.0, ask=None, bid_size=3.0, ask_size=0.0)]),
    ("vwap.AAPL", Vwap(symbol="AAPL", ts_event=1, ts_recv=2, session_start=0, session_vwap=1.2, session_volume=5.0,
                       rolling_vwap=1.1, window=10)),
    ("sma.20.AAPL", Indicator(symbol="AAPL", name="sma", window=20, value=1.3, ts_event=1, ts_recv=2)),
    ("ema.12.AAPL", Indicator(symbol="AAPL", name="ema", window=12, value=1.4, ts_event=1, ts_recv=2)),
    ("anomaly.AAPL", Anomaly(symbol="AAPL", rule="jump", detail="+12%", value=12.0, threshold=5.0, price=1.5,
                             ts_event=1, ts_recv=2)),
    ("book.AAPL", Book(symbol="AAPL", depth=2, bids=[(1.0, 5.0), (0.9, 1.0)], asks=[(1.1, 2.0)], ts_event=1, ts_recv=2)),
    ("status.worker-0", Status(name="worker-0", role="worker", pid=1, alive=True, restarts=0, records_in=10,
                               records_out=5, rate_in=1.0, rate_out=0.5, drops={"overflow": 0}, ts=3)),
    ("event.feed-sim", Event(source="feed-sim", kind="reconnect", message="back", ts=4)),
]


def send(pub: Publisher, topic: str, payload: object) -> None:
    if isinstance(payload, list):
        pub.publish_batch(topic, payload)
    else:
        pub.publish(topic, payload)  # type: ignore[arg-type]


def sync(pub: Publisher, sub: Subscriber, timeout: float = 30.0) -> None:
    """Repeat a probe until `sub` has it: every subscription made before is live."""
    topic, _ = probe(pub.src)
    sub.subscribe(topic)
    before = sub.last(topic)

    def step() -> None:
        pub.publish(*probe(pub.src))
        sub.poll(0.02)

    wait_until(lambda: sub.last(topic) is not before, timeout, f"probe `{topic}`", step)


def data_only(calls: list) -> list:
    """Drop the handshake probes from a list of recorded calls."""
    def is_probe(c) -> bool:
        return any(isinstance(x, Event) and x.kind == "probe" for x in c[1:]) or (
            c[0].startswith("msg") and isinstance(c[2], Event) and c[2].kind == "probe")
    return [c for c in calls if not is_probe(c)]


def pair(proxy: ProxyProcess, cleanup: list, src: str = "w0") -> tuple[Publisher, Subscriber]:
    sub = Subscriber(proxy.backend)
    pub = Publisher(proxy.frontend, src=src)
    cleanup.extend([sub, pub])
    return pub, sub


def test_every_kind_reaches_its_callbacks_typed_and_in_documented_order(proxy, cleanup):
    pub, sub = pair(proxy, cleanup)
    calls: list[tuple] = []
    kinds = ["bar", "trade", "quote", "vwap", "indicator", "anomaly", "book_update", "event", "status"]
    for name in kinds:
        for n in (1, 2):
            getattr(sub, f"on_{name}")(lambda p, name=name, n=n: calls.append((f"{name}{n}", p)))
    sub.on_message(lambda t, p: calls.append(("msg1", t, p)))
    sub.on_message(lambda t, p: calls.append(("msg2", t, p)))
    sub.subscribe("")
    sync(pub, sub)
    calls.clear()
    for topic, payload in ONE_OF_EACH:
        send(pub, topic, payload)
    wait_until(lambda: sub.last("event.feed-sim") is not None, 20, "all kinds", lambda: sub.poll(0.05))
    calls = data_only(calls)
    expected: list[tuple] = []
    slot = {"book": "book_update", "sma": "indicator", "ema": "indicator"}
    for topic, payload in ONE_OF_EACH:
        kind = wire.parse_topic(topic).kind
        name = slot.get(kind, kind)
        for item in payload if isinstance(payload, list) else [payload]:
            expected += [(f"{name}1", item), (f"{name}2", item)]
        expected += [("msg1", topic, payload), ("msg2", topic, payload)]
    assert calls == expected  # Structs compare by value; the publisher set seq=1 and src on ours
    types = {c[0]: type(c[1]) for c in calls if not c[0].startswith("msg")}
    assert types == {"bar1": Bar, "bar2": Bar, "trade1": Trade, "trade2": Trade, "quote1": Quote, "quote2": Quote,
                     "vwap1": Vwap, "vwap2": Vwap, "indicator1": Indicator, "indicator2": Indicator,
                     "anomaly1": Anomaly, "anomaly2": Anomaly, "book_update1": Book, "book_update2": Book,
                     "event1": Event, "event2": Event, "status1": Status, "status2": Status}
    assert sub.last("quote.AAPL")[0].ask is None and sub.last("book.AAPL").bids == [(1.0, 5.0), (0.9, 1.0)]
    assert sub.gaps == 0 and sub.decode_errors == 0


def test_decorators_and_exact_topics(proxy, cleanup):
    pub, sub = pair(proxy, cleanup)
    got: list[str] = []

    @sub.on_trade
    def on_trade(t: Trade) -> None:
        got.append(t.symbol)

    assert callable(on_trade)
    sub.subscribe("trade.AAPL", "trade.BRK.B", "bar.60s.*")
    sync(pub, sub)
    for sym in ["AAPLX", "AAPL", "BRK.BX", "BRK.B"]:
        pub.publish_batch(f"trade.{sym}", [trade(sym, 1.0)])
    pub.publish("bar.60s.MSFT", bar("MSFT", 1.0))
    wait_until(lambda: sub.last("bar.60s.MSFT") is not None, 20, "bar", lambda: sub.poll(0.05))
    assert got == ["AAPL", "BRK.B"]
    assert sub.last("trade.AAPLX") is None
    with pytest.raises(ValueError, match="ASCII"):
        sub.subscribe("trade.ÄPFEL")


def test_gaps_restarts_and_garbage_are_reported_and_counted(proxy, cleanup):
    sub = Subscriber(proxy.backend)
    cleanup.append(sub)
    errors: list = []
    restarts: list[Reconnect] = []
    bars: list[tuple[str, int]] = []
    sub.on_error(errors.append)
    sub.on_reconnect(restarts.append)
    sub.on_bar(lambda b: bars.append((b.src, b.seq)))
    sub.subscribe("bar.", "vwap.", "nope.", "trade.")
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    cleanup.append(raw)
    raw.connect(proxy.frontend)
    frame = wire.topic_frame("bar.60s.AAPL")
    base = msgspec.to_builtins(bar("AAPL", 1.0))

    def emit(seq: int, src: str = "crafted") -> None:
        raw.send_multipart([frame, msgpack.packb(base | {"seq": seq, "src": src})])

    # Slow joiner: count up from 1 until one arrives, then continue from there.
    seq = 0

    def step() -> None:
        nonlocal seq
        seq += 1
        emit(seq)
        sub.poll(0.02)

    wait_until(lambda: bars, 30, "first crafted bar", step)
    assert errors == [] and sub.gaps == 0  # joining mid-stream is not a gap
    first = bars[-1][1]
    wait_until(lambda: bars[-1][1] == seq, 10, "all probes", lambda: sub.poll(0.02))
    emit(seq + 1)
    emit(seq + 5)  # seq+2 .. seq+4 lost
    emit(seq + 6)
    emit(1)  # the publisher restarted
    emit(2)
    emit(3, src="other")  # another publisher on the same topic: its own sequence
    emit(5)  # restart's seq 3 and 4 lost
    raw.send_multipart([wire.topic_frame("vwap.AAPL"), b"\xc1"])  # never valid MessagePack
    raw.send_multipart([wire.topic_frame("vwap.AAPL"), msgpack.packb({"seq": 1})])  # missing fields
    raw.send_multipart([wire.topic_frame("nope.AAPL"), msgpack.packb({})])  # unknown kind
    raw.send_multipart([b"bar.60s.AAPL", msgpack.packb(base)])  # no NUL terminator
    raw.send(wire.topic_frame("bar.60s.X"))  # a single frame
    raw.send_multipart([wire.topic_frame("trade.AAPL"), msgpack.packb([])])  # empty array
    emit(6)
    wait_until(lambda: bars[-1] == ("crafted", 6), 20, "the last bar", lambda: sub.poll(0.05))
    assert first >= 1
    gaps = [e for e in errors if isinstance(e, SequenceGap)]
    assert [(g.topic, g.src, g.expected, g.got, g.missing) for g in gaps] == [
        ("bar.60s.AAPL", "crafted", seq + 2, seq + 5, 3),
        ("bar.60s.AAPL", "crafted", 3, 5, 2),
    ]
    assert sub.gaps == 2 and sub.missed == 5
    assert restarts == [Reconnect("publisher_restart", proxy.backend, "bar.60s.AAPL", "crafted", seq + 6)]
    assert sub.restarts == 1
    bad = [e for e in errors if isinstance(e, DecodeError)]
    assert sub.decode_errors == len(bad) == 6
    reasons = [(e.topic, e.reason) for e in bad]
    assert reasons[0][0] == "vwap.AAPL" and "MessagePack data is malformed" in reasons[0][1]
    assert reasons[1] == ("vwap.AAPL", "Object missing required field `symbol`")
    assert "unknown kind `nope`" in reasons[2][1]
    assert "NUL" in reasons[3][1]
    assert "expected 2 frames" in reasons[4][1]
    assert reasons[5] == ("trade.AAPL", "empty array")
    assert all(f"`{e.topic}`" in str(e) for e in bad)
    raw.close()
    ctx.term()


def test_connection_reconnect_and_publisher_restart_after_plant_restart(cleanup):
    first = ProxyProcess().start()
    second = None
    try:
        endpoint = first.backend  # resolved port; the restarted proxy binds the same one
        sub = Subscriber(endpoint)
        cleanup.append(sub)
        events: list[Reconnect] = []
        errors: list[SequenceGap] = []
        sub.on_reconnect(events.append)
        sub.on_error(errors.append)
        sub.subscribe("bar.60s.AAPL")
        pub = Publisher(first.frontend, src="w0")
        sync(pub, sub)
        pub.publish("bar.60s.AAPL", bar("AAPL", 1.0))
        pub.publish("bar.60s.AAPL", bar("AAPL", 2.0))
        wait_until(lambda: sub.last("bar.60s.AAPL") is not None and sub.last("bar.60s.AAPL").seq == 2, 20, "two bars",
                   lambda: sub.poll(0.05))
        assert sub.connected
        pub.close()
        first.stop()
        wait_until(lambda: not sub.connected, 20, "the disconnect", lambda: sub.poll(0.05))
        assert events == []
        second = ProxyProcess(backend=endpoint).start()
        wait_until(lambda: events, 30, "on_reconnect", lambda: sub.poll(0.05))
        assert events == [Reconnect("connection", endpoint)]
        assert sub.reconnects == 1 and sub.connected
        pub2 = Publisher(second.frontend, src="w0")  # the restarted worker: seq from 1
        cleanup.append(pub2)
        sync(pub2, sub)
        pub2.publish("bar.60s.AAPL", bar("AAPL", 3.0))
        wait_until(lambda: sub.last("bar.60s.AAPL").close == 3.0, 20, "the restarted publisher's bar",
                   lambda: sub.poll(0.05))
        # Its probes restarted too (event.w0): both topics report the restart.
        assert Reconnect("publisher_restart", endpoint, "bar.60s.AAPL", "w0", 2) in events
        assert {e.topic for e in events[1:]} == {"event.w0", "bar.60s.AAPL"}
        # Probes sent before the subscription reached pub2 are lost (a restart + gap on
        # event.w0); the bars themselves lost nothing.
        assert all(g.topic == "event.w0" and g.expected == 1 for g in errors)
        assert sub.gaps == len(errors)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_run_stops_at_count_and_at_timeout(proxy, cleanup):
    pub, sub = pair(proxy, cleanup)
    seen: list[int] = []
    sub.on_bar(lambda b: seen.append(b.seq))
    sub.subscribe("bar.60s.AAPL")
    sync(pub, sub)
    for i in range(10):
        pub.publish("bar.60s.AAPL", bar("AAPL", float(i)))
    assert sub.run(count=4, timeout=20) == 4
    assert seen == [1, 2, 3, 4]
    assert sub.run(count=6, timeout=20) == 6
    assert seen == list(range(1, 11))
    start = time.monotonic()
    assert sub.run(timeout=0.2) == 0
    assert 0.15 < time.monotonic() - start < 5
    assert sub.poll(0) == 0


def test_close_from_a_callback_ends_run(proxy, cleanup):
    pub, sub = pair(proxy, cleanup)
    sub.subscribe("bar.")
    sync(pub, sub)
    sub.on_bar(lambda b: sub.close())
    for i in range(5):
        pub.publish("bar.60s.AAPL", bar("AAPL", float(i)))
    assert sub.run(timeout=20) == 1
    sub.close()


def test_run_async_dispatches_without_blocking_the_loop(proxy, cleanup):
    pub, sub = pair(proxy, cleanup)
    got: list[Bar] = []
    sub.on_bar(got.append)
    sub.subscribe("bar.60s.AAPL")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def probes() -> None:
        # Publish from the same loop while run_async waits, until the first bar arrives.
        while not got:
            pub.publish("bar.60s.AAPL", bar("AAPL", -1.0))
            await asyncio.sleep(0.02)

    async def main() -> list[int]:
        tick = asyncio.create_task(ticker())
        try:
            counts = [(await asyncio.gather(sub.run_async(count=1, timeout=30), probes()))[0]]
            assert got, "nothing arrived within 30 s"
            for i in range(20):
                pub.publish("bar.60s.AAPL", bar("AAPL", float(i)))
            deadline = time.monotonic() + 30
            while sum(b.close >= 0 for b in got) < 20 and time.monotonic() < deadline:
                counts.append(await sub.run_async(count=1, timeout=5))
            counts.append(await sub.run_async(timeout=0.05))  # nothing left: returns 0
            return counts
        finally:
            tick.cancel()

    counts = asyncio.run(main())
    assert [b.close for b in got if b.close >= 0] == [float(i) for i in range(20)]
    assert set(counts[:-1]) == {1} and counts[-1] == 0
    assert ticks > 2  # the loop kept running while run_async waited
    assert sub.gaps == 0
    assert [b.seq for b in got] == list(range(got[0].seq, got[0].seq + len(got)))


def test_two_publisher_processes_through_the_client(proxy, cleanup):
    sub = Subscriber(proxy.backend)
    cleanup.append(sub)
    sub.subscribe("bar.60s.", "event.")
    got: list[tuple[str, int]] = []
    sub.on_bar(lambda b: got.append((b.src, b.seq)))
    gos = [CTX.Event(), CTX.Event()]
    procs = [
        CTX.Process(target=publisher_main, args=(proxy.frontend, f"p{i}", [(f"bar.60s.S{i}", bar(f"S{i}", 1.0))] * 50,
                                                 gos[i]), daemon=True)
        for i in range(2)
    ]
    try:
        for p in procs:
            p.start()
        for i in range(2):
            wait_until(lambda i=i: sub.last(f"event.p{i}") is not None, 60, f"probe from p{i}", lambda: sub.poll(0.05))
            gos[i].set()
        wait_until(lambda: len(got) == 100, 30, "100 bars", lambda: sub.poll(0.05))
    finally:
        for g in gos:
            g.set()
        reap(*procs)
    assert sorted(got) == sorted([(f"p{i}", s) for i in range(2) for s in range(1, 51)])
    assert sub.gaps == 0


def _trades(seqs: range, ts: int) -> bytes:
    return msgspec.msgpack.encode([Trade(symbol="ESU4", ts_event=ts, ts_recv=ts, price=5528.75, size=1.0, side="N",
                                         seq=s, src="worker-0") for s in seqs])


def test_a_live_copy_of_a_since_start_from_seq_1_is_dropped_but_a_publisher_restart_is_not():
    """A ``since`` start can deliver a topic from seq 1 while the same message also waits live (the
    subscription was on before the service answered). That copy was taken for a publisher that
    started over: every message of the topic came twice (seen in the IBKR plant test, 240 trades
    for 120). A live seq-1 message with other bytes is a restart, and is delivered."""
    frame = wire.topic_frame("trade.ESU4")
    for live, restarted in ((_trades(range(1, 4), 10), False), (_trades(range(1, 4), 99), True)):
        sub = Subscriber("tcp://127.0.0.1:9", recovery=False)
        got: list[Trade] = []
        sub.on_trade(got.append)
        try:
            sub._replay(("trade.ESU4", 1, 3, _trades(range(1, 4), 10)), merged=True)  # what history gave
            sub._dispatch([frame, live])
            sub._dispatch([frame, _trades(range(4, 5), 11)])
        finally:
            sub.close()
        assert [t.seq for t in got] == ([1, 2, 3, 1, 2, 3, 4] if restarted else [1, 2, 3, 4])
        assert (sub.duplicates, sub.restarts) == ((0, 1) if restarted else (1, 0))
