"""Publisher and proxy over real sockets: a proxy in a spawned process, PUB publishers,
plain pyzmq SUB sockets decoding with the stock msgpack library (independent of our client)."""

from __future__ import annotations

import ast
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import msgspec
import numpy as np
import pytest
import zmq
from _pubsub import CTX, START_TIMEOUT, probe, publisher_main, reap, wait_until
from _shmutil import no_leaks, unique_plant

from streamctl.bus import wire
from streamctl.bus.hub import HubSpec, hub_main
from streamctl.bus.proxy import Proxy, ProxyBindError
from streamctl.bus.publisher import Publisher
from streamctl.cli.runtime import internal_endpoint
from streamctl.cli.status import collect_status
from streamctl.shm.records import PRICE_SCALE, UNDEF_PRICE, Kind, Side, empty
from streamctl.shm.segments import segment_name
from streamctl.shm.stats import ProcessTable, State

REPO = Path(__file__).resolve().parents[1]


def bar(symbol: str, close: float, interval: str = "60s") -> wire.Bar:
    return wire.Bar(
        symbol=symbol, interval=interval, ts_start=0, ts_end=60_000_000_000, open=close, high=close,
        low=close, close=close, volume=1.0, trades=1, vwap=close, ts_event=1, ts_recv=2,
    )


def trade(symbol: str, price: float, side: str = "B") -> wire.Trade:
    return wire.Trade(symbol=symbol, ts_event=1, ts_recv=2, price=price, size=1.0, side=side)  # type: ignore[arg-type]


class RawSub:
    """A plain SUB socket + msgpack: what a non-Python consumer would do."""

    def __init__(self, endpoint: str, *prefixes: bytes):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = 0
        for p in prefixes:
            self.sock.subscribe(p)
        self.sock.connect(endpoint)
        self.got: list[tuple[str, object]] = []

    def pump(self, timeout: float = 0.05) -> None:
        if self.sock.poll(int(timeout * 1000)):
            while True:
                try:
                    frame, data = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                assert frame.endswith(b"\x00"), frame
                self.got.append((frame[:-1].decode("ascii"), msgpack.unpackb(data)))

    def topics(self) -> list[str]:
        return [t for t, _ in self.got]

    def data(self, skip_prefix: str = "event.") -> list[tuple[str, object]]:
        return [(t, p) for t, p in self.got if not t.startswith(skip_prefix)]

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def handshake(pub: Publisher, subs: list[RawSub], timeout: float = 30.0) -> None:
    """Repeat a probe until every subscriber has seen one (no sleeps for the slow joiner)."""
    topic, _ = probe(pub.src)

    def seen() -> bool:
        return all(topic in s.topics() for s in subs)

    def step() -> None:
        pub.publish(*probe(pub.src))
        for s in subs:
            s.pump(0.02)

    wait_until(seen, timeout, f"probe `{topic}` at every subscriber", step)


def finish(pub: Publisher, subs: list[RawSub], timeout: float = 30.0) -> None:
    """Send an end marker and pump until every subscriber has it: all earlier data arrived."""
    pub.publish(f"event.{pub.src}", wire.Event(source=pub.src, kind="end", message="", ts=0))

    def ended() -> bool:
        return all(any(t == f"event.{pub.src}" and p["kind"] == "end" for t, p in s.got) for s in subs)  # type: ignore[index]

    wait_until(ended, timeout, "end marker", lambda: [s.pump(0.02) for s in subs])


# -- proxy ---------------------------------------------------------------------------------


def test_proxy_refuses_a_taken_port_naming_the_endpoint(tmp_path):
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    squatter.linger = 0
    try:
        squatter.bind("tcp://127.0.0.1:*")
        taken = squatter.getsockopt_string(zmq.LAST_ENDPOINT)
        p = Proxy(frontend=f"ipc://{tmp_path}/f.ipc", backend=taken, sndhwm=10)
        with pytest.raises(ProxyBindError, match=re.escape(f"`{taken}`")) as info:
            p.start()
        assert info.value.endpoint == taken and "in use" in str(info.value)
        assert not p.running
        p.stop()  # harmless after a failed start
    finally:
        squatter.close()
        ctx.term()


def test_proxy_refuses_a_live_ipc_path_but_replaces_a_stale_one(tmp_path):
    front = f"ipc://{tmp_path}/f.ipc"
    with Proxy(frontend=front, backend="tcp://127.0.0.1:*", sndhwm=10) as first:
        second = Proxy(frontend=front, backend="tcp://127.0.0.1:*", sndhwm=10)
        with pytest.raises(ProxyBindError, match="another process is listening"):
            second.start()
        assert first.running
    # A socket file nobody listens on (left by a crash) is replaced.
    import socket

    stale = tmp_path / "stale.ipc"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert stale.exists()
    with Proxy(frontend=f"ipc://{stale}", backend="tcp://127.0.0.1:*", sndhwm=10) as p:
        assert p.running


def test_proxy_forwards_counts_and_stops_idempotently(tmp_path, cleanup):
    p = Proxy(frontend=f"ipc://{tmp_path}/f.ipc", backend="tcp://127.0.0.1:*", sndhwm=1000)
    p.start()
    try:
        assert p.backend_endpoint.startswith("tcp://127.0.0.1:") and not p.backend_endpoint.endswith("*")
        sub = RawSub(p.backend_endpoint, b"bar.")
        cleanup.append(sub)
        pub = Publisher(p.frontend_endpoint, src="w0")
        cleanup.append(pub)
        assert pub.wait_connected(10)
        sub.sock.subscribe(b"event.")
        handshake(pub, [sub])
        for i in range(50):
            pub.publish("bar.60s.AAPL", bar("AAPL", 100 + i))
        wait_until(lambda: len(sub.data()) == 50, 10, "50 bars", sub.pump)
        stats = p.stats()
        assert stats is not None and stats.messages_forwarded >= 51
        assert stats.subscriptions_in >= 2
    finally:
        p.stop()
        p.stop()
    assert not p.running and p.stats() is None


def test_hub_counts_each_forwarded_message_once(tmp_path, cleanup):
    """What `streamctl status` shows for the hub: N messages through a real hub process read as N."""
    with no_leaks(unique_plant("hub")) as plant, ProcessTable.create(segment_name(plant, "stats"), 1, plant=plant) as table:
        slot = table.slot(0)
        slot.set("name", "hub")
        slot.set("role", "hub")
        spec = HubSpec(plant=plant, slot=0, stats=table.name, internal=f"ipc://{tmp_path}/in.ipc",
                       public=f"ipc://{tmp_path}/out.ipc")
        hub = CTX.Process(target=hub_main, args=(spec,), daemon=True)
        hub.start()
        try:
            wait_until(lambda: slot.get("state") == State.READY, START_TIMEOUT, "the hub to be ready")
            table.unlink()  # both processes have it mapped: the name is no longer needed
            manifest = {"name": plant, "stats": table.name, "supervisor_pid": os.getpid()}

            def hub_counts() -> tuple[int, int]:
                (row,) = collect_status(manifest, table=table)["processes"]
                return row["records_in"], row["records_out"]

            sub = RawSub(spec.public, b"")
            cleanup.append(sub)
            pub = Publisher(spec.internal, src="w0")
            cleanup.append(pub)
            handshake(pub, [sub])
            finish(pub, [sub])  # every probe that reached the hub has reached `sub`
            before = len(sub.got)
            wait_until(lambda: hub_counts() == (before, before), 10, f"the hub to count {before} probes")
            n = 1000
            for i in range(n):
                pub.publish("bar.60s.AAPL", bar("AAPL", 100 + i))
            wait_until(lambda: len(sub.data()) == n, 30, f"{n} bars", sub.pump)
            wait_until(lambda: hub_counts()[0] >= before + n, 10, "the hub's counters")
            assert hub_counts() == (before + n, before + n)
        finally:
            hub.terminate()
            reap(hub)
        assert hub.exitcode == 0


def test_internal_endpoint_is_in_a_private_runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCTL_RUN_DIR", str(tmp_path / "run"))
    ep = internal_endpoint("demo")
    assert ep == f"ipc://{tmp_path}/run/demo.pub"
    assert (os.stat(tmp_path / "run").st_mode & 0o777) == 0o700
    with pytest.raises(ValueError, match="`plant`"):
        internal_endpoint("a/b")


# -- publisher -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: p.publish("trade.AAPL", trade("AAPL", 1.0)), ValueError, "publish_batch"),
        (lambda p: p.publish_batch("bar.60s.AAPL", [bar("AAPL", 1.0)]), ValueError, r"publish \(a single map\)"),
        (lambda p: p.publish("bogus.AAPL", bar("AAPL", 1.0)), ValueError, "known kind"),
        (lambda p: p.publish("bar.AAPL", bar("AAPL", 1.0)), ValueError, "`bar.AAPL`"),
        (lambda p: p.publish("vwap.AAPL\x00", bar("AAPL", 1.0)), ValueError, "NUL"),
        (lambda p: p.publish("vwap.AAPLé", bar("AAPL", 1.0)), ValueError, "ASCII"),
        (lambda p: p.publish("vwap.AAPL", bar("AAPL", 1.0)), TypeError, "carries Vwap; got Bar"),
        (lambda p: p.publish_batch("trade.AAPL", [bar("AAPL", 1.0)]), TypeError, "carries Trade; got Bar"),
    ],
)
def test_publisher_refuses_topics_outside_the_grammar(cleanup, call, error, match):
    pub = Publisher("tcp://127.0.0.1:1", src="w0")  # never connects: nothing is sent
    cleanup.append(pub)
    with pytest.raises(error, match=match):
        call(pub)
    assert pub.messages_out == 0


def test_publisher_numbers_each_topic_from_one_and_stamps_src(proxy, cleanup):
    sub = RawSub(proxy.backend, b"")
    cleanup.append(sub)
    pub = Publisher(proxy.frontend, src="worker-7")
    cleanup.append(pub)
    handshake(pub, [sub])
    for i in range(5):
        pub.publish("bar.60s.AAPL", bar("AAPL", 100.0 + i))
        pub.publish("bar.60s.MSFT", bar("MSFT", 200.0 + i))
    pub.publish_batch("trade.AAPL", [trade("AAPL", 1.0), trade("AAPL", 2.0, "S")])
    pub.publish_batch("trade.AAPL", [trade("AAPL", 3.0, "N")])
    pub.publish_many([("vwap.AAPL", wire.Vwap(symbol="AAPL", ts_event=1, ts_recv=2, session_start=0,
                                              session_vwap=1.5, session_volume=3.0, rolling_vwap=1.4, window=10))])
    finish(pub, [sub])
    by_topic: dict[str, list] = {}
    for t, p in sub.data():
        by_topic.setdefault(t, []).append(p)
    assert [b["seq"] for b in by_topic["bar.60s.AAPL"]] == [1, 2, 3, 4, 5]
    assert [b["close"] for b in by_topic["bar.60s.MSFT"]] == [200.0, 201.0, 202.0, 203.0, 204.0]
    assert [b["seq"] for b in by_topic["bar.60s.MSFT"]] == [1, 2, 3, 4, 5]
    assert {b["src"] for bars in by_topic.values() for b in (bars if isinstance(bars[0], dict) else [])} == {"worker-7"}
    arrays = by_topic["trade.AAPL"]
    assert [[(t["seq"], t["price"], t["side"]) for t in a] for a in arrays] == [[(1, 1.0, "B"), (2, 2.0, "S")], [(3, 3.0, "N")]]
    assert by_topic["vwap.AAPL"][0]["session_vwap"] == 1.5 and by_topic["vwap.AAPL"][0]["seq"] == 1
    assert pub.sequence("bar.60s.AAPL") == 5 and pub.sequence("nothing.here") == 0


def test_exact_symbol_and_prefix_subscriptions(proxy, cleanup):
    exact = RawSub(proxy.backend, wire.subscription_prefix("trade.AAPL"), wire.subscription_prefix("trade.BRK.B"))
    prefix = RawSub(proxy.backend, wire.subscription_prefix("trade.*"))
    star = RawSub(proxy.backend, wire.subscription_prefix("trade.AAPL*"))
    subs = [exact, prefix, star]
    cleanup.extend(subs)
    pub = Publisher(proxy.frontend, src="w0")
    cleanup.append(pub)
    for s in subs:
        s.sock.subscribe(b"event.")
    handshake(pub, subs)
    for sym in ["AAPL", "AAPLX", "BRK.B", "BRK.BX", "BRK"]:
        pub.publish_batch(f"trade.{sym}", [trade(sym, 10.0)])
    finish(pub, subs)
    assert [t for t, _ in exact.data()] == ["trade.AAPL", "trade.BRK.B"]
    assert [t for t, _ in prefix.data()] == ["trade.AAPL", "trade.AAPLX", "trade.BRK.B", "trade.BRK.BX", "trade.BRK"]
    assert [t for t, _ in star.data()] == ["trade.AAPL", "trade.AAPLX"]
    assert wire.parse_topic("trade.BRK.B") == ("trade", None, "BRK.B")
    assert exact.data()[1][1][0]["symbol"] == "BRK.B"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("bar.60s.BRK.B", ("bar", "60s", "BRK.B")),
        ("sma.20.AAPL", ("sma", "20", "AAPL")),
        ("event.worker-0", ("event", None, "worker-0")),
    ],
)
def test_parse_topic_splits_kind_param_and_name(text, parts):
    assert wire.parse_topic(text) == parts
    assert wire.topic(parts[0], parts[2], parts[1]) == text
    assert wire.parse_topic(wire.frame_text(wire.topic_frame(text))) == parts


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nope.AAPL", "unknown kind `nope`"),
        ("bar.AAPL", "`bar.AAPL` does not follow"),
        ("bar..AAPL", "`bar..AAPL` does not follow"),
        ("vwap.", "`vwap.` does not follow"),
        ("vwap.A\x00", "NUL"),
    ],
)
def test_parse_topic_refuses_what_is_outside_the_grammar(text, match):
    with pytest.raises(ValueError, match=match):
        wire.parse_topic(text)


@pytest.mark.parametrize(("frame", "match"), [(b"vwap.AAPL", "NUL"), (b"vwap.\xc3\xa9\x00", "ASCII")])
def test_frame_text_refuses_what_is_not_a_topic_frame(frame, match):
    with pytest.raises(ValueError, match=match):
        wire.frame_text(frame)


def test_event_kinds_are_their_wire_strings():
    assert wire.EventKind("reconnect") is wire.EventKind.RECONNECT == "reconnect"
    assert msgpack.unpackb(msgspec.msgpack.encode(wire.Event(source="f", kind=wire.EventKind.GAP, message="",
                                                             ts=0)))["kind"] == "gap"
    with pytest.raises(ValueError, match="`kind` must be one of .*; was 'reconect'"):
        wire.EventKind("reconect")


def _raw_batch() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Interleaved trades, quotes and book updates for three symbols plus an unmapped one."""
    rng = np.random.default_rng(7)
    n = 300
    rec = empty(n)
    rec["ts_event"] = np.arange(n) * 1000 + 1_700_000_000_000_000_000
    rec["ts_recv"] = rec["ts_event"] + 5
    rec["kind"] = rng.choice([Kind.TRADE, Kind.QUOTE, Kind.BOOK], size=n)
    rec["side"] = rng.choice([Side.NONE, Side.BID, Side.ASK], size=n)
    rec["price"] = rng.integers(1, 500_000, size=n) * 10_000_000  # up to 5000.00
    rec["price2"] = rec["price"] + 10_000_000
    rec["size"] = rng.integers(1, 1000, size=n) / 8
    rec["size2"] = rng.integers(1, 1000, size=n) / 4
    undef = rng.random(n) < 0.1
    rec["price"][undef] = UNDEF_PRICE
    rec["price2"][rng.random(n) < 0.1] = UNDEF_PRICE
    symbols = ["AAPL", "BRK.B", "ESZ4"]
    sym_idx = rng.choice([0, 1, 2, -1], size=n, p=[0.4, 0.3, 0.25, 0.05]).astype(np.int32)
    return rec, symbols, sym_idx


def _expected_raw(rec: np.ndarray, symbols: list[str], sym_idx: np.ndarray, src: str, seq0: dict) -> dict:
    """Per-record reference, in plain Python: what the raw topics must carry."""
    out: dict[str, list[dict]] = {}
    side = {Side.NONE: "N", Side.BID: "B", Side.ASK: "S"}
    for r, k in zip(rec, sym_idx, strict=True):
        if k < 0 or r["kind"] not in (Kind.TRADE, Kind.QUOTE):
            continue
        sym = symbols[k]
        common = {"src": src, "symbol": sym, "ts_event": int(r["ts_event"]), "ts_recv": int(r["ts_recv"])}
        if r["kind"] == Kind.TRADE:
            topic = f"trade.{sym}"
            m = common | {"price": int(r["price"]) / PRICE_SCALE, "size": float(r["size"]), "side": side[r["side"]]}
        else:
            topic = f"quote.{sym}"
            m = common | {
                "bid": None if r["price"] == UNDEF_PRICE else int(r["price"]) / PRICE_SCALE,
                "ask": None if r["price2"] == UNDEF_PRICE else int(r["price2"]) / PRICE_SCALE,
                "bid_size": float(r["size"]),
                "ask_size": float(r["size2"]),
            }
        seq0[topic] = seq0.get(topic, 0) + 1
        out.setdefault(topic, []).append(m | {"seq": seq0[topic]})
    return out


def test_publish_raw_one_array_per_topic_oldest_first(proxy, cleanup):
    rec, symbols, sym_idx = _raw_batch()
    sub = RawSub(proxy.backend, b"")
    cleanup.append(sub)
    pub = Publisher(proxy.frontend, src="worker-1")
    cleanup.append(pub)
    handshake(pub, [sub])
    seqs: dict[str, int] = {}
    expected = [_expected_raw(rec, symbols, sym_idx, "worker-1", seqs)]
    sent = pub.publish_raw(rec, symbols, sym_idx, trades=True, quotes=True)
    assert sent == 6  # trade and quote for each of three symbols
    # A second call continues every topic's numbering; trades only this time.
    only_trades = rec[rec["kind"] != Kind.QUOTE]
    idx2 = sym_idx[rec["kind"] != Kind.QUOTE]
    expected.append(_expected_raw(only_trades, symbols, idx2, "worker-1", seqs))
    assert pub.publish_raw(only_trades, symbols, idx2, trades=True, quotes=False) == 3
    assert pub.publish_raw(rec[:0], symbols, sym_idx[:0], trades=True, quotes=True) == 0
    assert pub.raw_skipped == 2 * int(((sym_idx < 0) & (rec["kind"] == Kind.TRADE)).sum()) + int(
        ((sym_idx < 0) & (rec["kind"] == Kind.QUOTE)).sum()
    )
    finish(pub, [sub])
    got = sub.data()
    assert len(got) == 9
    first, second = dict(got[:6]), dict(got[6:])
    assert first == expected[0]
    assert second == expected[1]
    assert any(m["bid"] is None for m in first["quote.AAPL"]) and any(m["ask"] is None for m in first["quote.ESZ4"])
    assert pub.messages_out == 9 + pub.sequence("event.worker-1")


def test_publish_raw_all_trades_of_interleaved_symbols(proxy, cleanup):
    """A batch of nothing but trades (no record filtered out) must still be regrouped."""
    rec, symbols, sym_idx = _raw_batch()
    rec["kind"] = Kind.TRADE
    sym_idx = np.arange(len(rec), dtype=np.int32) % 3
    sub = RawSub(proxy.backend, b"")
    cleanup.append(sub)
    pub = Publisher(proxy.frontend, src="w1")
    cleanup.append(pub)
    handshake(pub, [sub])
    assert pub.publish_raw(rec, symbols, sym_idx, trades=True, quotes=True) == 3
    # And a single-symbol batch, which takes the no-gather path.
    one = rec[:10]
    assert pub.publish_raw(one, symbols, np.zeros(10, np.int32), trades=True, quotes=False) == 1
    finish(pub, [sub])
    got = sub.data()
    seqs: dict[str, int] = {}
    assert dict(got[:3]) == _expected_raw(rec, symbols, sym_idx, "w1", seqs)
    assert got[3] == ("trade.AAPL", _expected_raw(one, symbols, np.zeros(10, np.int32), "w1", seqs)["trade.AAPL"])


def test_publish_raw_checks_lengths(cleanup):
    pub = Publisher("tcp://127.0.0.1:1", src="w0")
    cleanup.append(pub)
    with pytest.raises(ValueError, match="`sym_idx` has 2 entries for 3 records"):
        pub.publish_raw(empty(3), ["A"], np.zeros(2, np.int32), trades=True, quotes=True)


def test_two_publisher_processes_reach_one_subscriber_through_one_endpoint(proxy, cleanup):
    sub = RawSub(proxy.backend, b"bar.60s.", b"event.")
    cleanup.append(sub)
    gos = [CTX.Event(), CTX.Event()]
    procs = []
    try:
        for i, sym in enumerate(["AAPL", "MSFT"]):
            items = [(f"bar.60s.{sym}", bar(sym, 100.0 + k)) for k in range(100)]
            p = CTX.Process(target=publisher_main, args=(proxy.frontend, f"worker-{i}", items, gos[i]), daemon=True)
            p.start()
            procs.append(p)
        for i in range(2):
            wait_until(lambda i=i: f"event.worker-{i}" in sub.topics(), 60, f"probe from worker-{i}", sub.pump)
            gos[i].set()
        wait_until(lambda: len(sub.data()) == 200, 30, "200 bars from two processes", sub.pump)
    finally:
        for g in gos:
            g.set()
        reap(*procs)
    assert [p.exitcode for p in procs] == [0, 0]
    for i, sym in enumerate(["AAPL", "MSFT"]):
        mine = [p for t, p in sub.data() if t == f"bar.60s.{sym}"]
        assert [m["seq"] for m in mine] == list(range(1, 101))
        assert {m["src"] for m in mine} == {f"worker-{i}"}


# -- the doc's pyzmq + msgpack subscriber ----------------------------------------------------


def _doc_snippet() -> str:
    text = (REPO / "docs" / "wire.md").read_text()
    section = text.split("## A subscriber with nothing but pyzmq and msgpack", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/wire.md lost its pyzmq + msgpack subscriber"
    return code.group(1)


def test_every_python_block_in_the_wire_doc_compiles_and_imports_what_exists():
    text = (REPO / "docs" / "wire.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "docs/wire.md", "exec")
        for line in block.splitlines():
            if line.startswith(("import ", "from ")):
                exec(line, {})  # the names the doc imports exist


def test_doc_subscriber_decodes_live_payloads_and_reports_loss(proxy, cleanup):
    code = _doc_snippet()
    assert "import msgpack" in code and "streamctl" not in code
    assert len(code.strip().splitlines()) <= 25
    code, n = re.subn(r'^ENDPOINT = ".*"$', f'ENDPOINT = "{proxy.backend}"', code, flags=re.M)
    assert n == 1
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []

    def read(timeout: float) -> None:
        try:
            seen.append(lines.get(timeout=timeout))
        except queue.Empty:
            pass

    pub = Publisher(proxy.frontend, src="worker-0")
    cleanup.append(pub)
    ctx = zmq.Context()
    crafted = ctx.socket(zmq.PUB)
    crafted.linger = 0
    try:
        # Slow joiner: repeat a bar until the doc's subscriber prints one.
        def step() -> None:
            pub.publish("bar.60s.AAPL", bar("AAPL", 1.0))
            read(0.05)

        wait_until(lambda: any(s.startswith("bar.60s.AAPL ") for s in seen), 60, "the doc subscriber", step)
        pub.publish_batch("trade.AAPLX", [trade("AAPLX", 9.0)])
        pub.publish_batch("trade.AAPL", [trade("AAPL", 187.25, "S"), trade("AAPL", 187.5, "B")])
        wait_until(lambda: sum(s.startswith("trade.AAPL ") for s in seen) == 2, 30, "two trades", lambda: read(0.1))
        trades = [ast.literal_eval(s.split(" ", 1)[1]) for s in seen if s.startswith("trade.")]
        assert [(t["symbol"], t["price"], t["side"], t["seq"]) for t in trades] == [
            ("AAPL", 187.25, "S", 1), ("AAPL", 187.5, "B", 2)
        ]
        assert not any("AAPLX" in s for s in seen)
        # Loss: a publisher that skips seq 2..4 must make the snippet say so.
        crafted.connect(proxy.frontend)
        frame = wire.topic_frame("bar.60s.AAPL")
        body = msgspec.to_builtins(bar("AAPL", 2.0)) | {"src": "crafted"}

        def send(seq: int) -> None:
            crafted.send_multipart([frame, msgpack.packb(body | {"seq": seq})])

        seq = 0

        def crafted_step() -> None:
            nonlocal seq
            seq += 1
            send(seq)
            read(0.05)

        wait_until(lambda: any("'src': 'crafted'" in s for s in seen), 60, "crafted bar", crafted_step)
        send(seq + 4)
        wait_until(lambda: any(s.startswith("LOST 3 on bar.60s.AAPL from crafted") for s in seen), 30, "LOST line",
                   lambda: read(0.1))
    finally:
        crafted.close()
        ctx.term()
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            err = proc.stderr.read()
            assert "Traceback" not in err or "KeyboardInterrupt" in err, err


def test_publisher_close_flushes_queued_messages(proxy, cleanup):
    """Messages published just before close() still arrive (linger), e.g. a final partial bar."""
    sub = RawSub(proxy.backend, b"")
    cleanup.append(sub)
    pub = Publisher(proxy.frontend, src="w0")
    handshake(pub, [sub])
    for i in range(1000):
        pub.publish("bar.60s.AAPL", bar("AAPL", float(i)))
    start = time.monotonic()
    pub.close()
    pub.close()
    assert time.monotonic() - start < 5
    wait_until(lambda: len(sub.data()) == 1000, 20, "1000 bars after close", sub.pump)


def test_small_and_large_raw_batches_decode_to_the_same_payloads(tmp_path):
    """`publish_raw` builds Structs for a few records and packs arrays for many: same maps."""
    from streamctl.bus.publisher import _SMALL_BATCH
    from streamctl.ingest.vendors.sim.generator import SimGenerator
    from streamctl.ingest.vendors.sim.options import Options

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    endpoint = f"ipc://{tmp_path}/raw.sock"
    sub.bind(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    records = SimGenerator(Options(), ["AAA", "BBB"], [0, 1]).take(4 * _SMALL_BATCH)
    records["price2"][::7] = UNDEF_PRICE  # some empty quote sides
    symbols = ["AAA", "BBB"]
    sym_idx = records["instrument_id"].astype(np.int32)

    def decoded(publisher, batches) -> dict:
        out: dict[str, list] = {}
        for batch in batches:
            publisher.publish_raw(records[batch], symbols, sym_idx[batch], trades=True, quotes=True)
        deadline = time.monotonic() + 10
        while sum(len(v) for v in out.values()) < int(np.isin(records["kind"], (1, 2)).sum()):
            assert sub.poll(int(max(deadline - time.monotonic(), 0) * 1000)), "raw messages did not arrive"
            topic, payload = sub.recv_multipart()
            for item in msgpack.unpackb(payload):
                item.pop("seq")
                out.setdefault(topic, []).append(item)
        return out

    with Publisher(endpoint, src="w0") as publisher:
        deadline = time.monotonic() + 10  # slow joiner: probe until the subscription is in place
        while not sub.poll(20):
            assert time.monotonic() < deadline, "subscription never reached the publisher"
            publisher.publish("event.probe", wire.Event(source="t", kind="probe", message="", ts=0))
        while sub.poll(50):
            sub.recv_multipart()
        small = decoded(publisher, [slice(i, i + 3) for i in range(0, len(records), 3)])
        large = decoded(publisher, [slice(0, len(records))])
    sub.close(0)
    ctx.term()
    assert small == large and set(small) == {b"trade.AAA\x00", b"trade.BBB\x00", b"quote.AAA\x00", b"quote.BBB\x00"}
