"""The recovery service's protocol (`docs/wire.md`, "Recovery") against a real proxy: history
from a seq (and when it is gone), since a time, last values by exact topic or prefix, a
publisher's last seqs, bad requests answered, and CURVE on both of its endpoints."""

from __future__ import annotations

import msgspec
import pytest
import zmq
from _common import free_port, wait_until

from streamctl.bus import wire
from streamctl.bus.curve import plant_keys
from streamctl.bus.proxy import Proxy
from streamctl.bus.publisher import Publisher
from streamctl.bus.recovery import RecoveryService, ask, internal_recovery_endpoint, service_binds

pytestmark = pytest.mark.timeout(120)


def _bar(symbol: str, close: float) -> wire.Bar:
    return wire.Bar(symbol=symbol, interval="60s", ts_start=0, ts_end=60_000_000_000, open=close, high=close,
                    low=close, close=close, volume=1.0, trades=1, vwap=close, ts_event=1, ts_recv=1)


@pytest.fixture
def service(tmp_path):
    """A proxy with the plant's internal keys and public keys, its recovery service, and a
    publisher that sent 30 bars on `bar.60s.AAPL` and one on `bar.60s.AAPLX`."""
    internal_server, internal_client = plant_keys()
    public_server, public_client = plant_keys()
    capture = "inproc://test-recovery-capture"
    proxy = Proxy(frontend=f"ipc://{tmp_path}/in.ipc", backend="tcp://127.0.0.1:*", sndhwm=1000,
                  frontend_curve=internal_server, backend_curve=public_server, capture=capture)
    proxy.start()
    public = f"tcp://127.0.0.1:{free_port()}"
    assert proxy.context is not None and proxy.frontend_endpoint is not None
    svc = RecoveryService(proxy.context, capture=capture, topic_bytes=2048,
                          binds=service_binds(internal=proxy.frontend_endpoint, public=public,
                                              internal_curve=internal_server, public_curve=public_server))
    svc.start()
    pub = Publisher(proxy.frontend_endpoint, src="w0", curve=internal_client)
    try:
        assert pub.wait_subscribed(30)  # no subscriber anywhere: the service's own subscription is enough
        for i in range(1, 31):
            pub.publish("bar.60s.AAPL", _bar("AAPL", float(i)))
        pub.publish("bar.60s.AAPLX", _bar("AAPLX", 99.0))
        wait_until(lambda: (ask(public, {"op": "seqs", "src": "w0"}, timeout=5, curve=public_client) or {})
                   .get("seqs") == {"bar.60s.AAPL": 30, "bar.60s.AAPLX": 1}, 30, "the service to hold every bar")
        yield public, public_client, internal_client, proxy.frontend_endpoint, svc
    finally:
        pub.close()
        svc.stop()
        proxy.stop()


def _closes(messages: list) -> list[tuple[int, float]]:
    return [(first, msgspec.msgpack.decode(payload, type=wire.Bar).close) for _, first, _, payload in messages]


def test_history_from_a_seq_is_complete_only_while_the_service_holds_it(service):
    public, keys, *_ = service
    whole = ask(public, {"op": "history", "topic": "bar.60s.AAPL", "from_seq": 1}, timeout=5, curve=keys)
    assert whole is not None and whole["ok"] and not whole["complete"] and not whole["more"]
    held = _closes(whole["messages"])
    assert 1 < held[0][0] and [seq for seq, _ in held] == list(range(held[0][0], 31))  # 2 KiB: the newest only
    assert all(close == float(seq) for seq, close in held)
    tail = ask(public, {"op": "history", "topic": "bar.60s.AAPL", "from_seq": 28}, timeout=5, curve=keys)
    assert tail["complete"] and _closes(tail["messages"]) == [(28, 28.0), (29, 29.0), (30, 30.0)]
    assert all(m[0] == "bar.60s.AAPL" and m[1] == m[2] for m in tail["messages"])


def test_last_values_by_exact_topic_or_prefix_and_since_a_time(service):
    public, keys, *_ = service
    exact = ask(public, {"op": "last", "pattern": "bar.60s.AAPL"}, timeout=5, curve=keys)["messages"]
    assert [(m[0], m[1]) for m in exact] == [("bar.60s.AAPL", 30)]  # never AAPLX
    prefix = ask(public, {"op": "last", "pattern": "bar.60s."}, timeout=5, curve=keys)["messages"]
    assert [(m[0], m[1]) for m in prefix] == [("bar.60s.AAPL", 30), ("bar.60s.AAPLX", 1)]
    since = ask(public, {"op": "history", "pattern": "bar.", "since_ns": 0}, timeout=5, curve=keys)["messages"]
    assert [m[0] for m in since][-2:] == ["bar.60s.AAPL", "bar.60s.AAPLX"]  # the order the hub forwarded them
    assert ask(public, {"op": "history", "pattern": "bar.", "since_ns": 2**62}, timeout=5,
               curve=keys)["messages"] == []


def test_malformed_messages_are_skipped_and_the_good_ones_kept(service):
    """What the hub forwards but is no payload (not MessagePack, an empty trade array, a map where
    an array belongs, a `src` not UTF-8, a frame that is no topic) is not kept, and the well-formed
    messages around it, in the same take, are: a topic whose first message was bad included."""
    public, keys, internal_keys, frontend, _ = service
    encode = msgspec.msgpack.encode
    trades = [wire.Trade(seq=seq, src="raw", symbol="MSFT", ts_event=1, ts_recv=1, price=1.0, size=1.0, side="B")
              for seq in (1, 2, 3)]
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.linger = 5000
    internal_keys.apply(sock)
    sock.connect(frontend)
    wait_until(lambda: sock.poll(100) and sock.recv()[1:] == wire.SYNC_SUBSCRIPTION, 30, "the hub's subscriptions")
    trade, bar = wire.topic_frame("trade.MSFT"), wire.topic_frame("bar.60s.MSFT")
    for frames in ([trade, b"\xc1"], [trade, b"\x90"], [trade, encode(trades[0])], [bar, encode([_bar("MSFT", 1.0)])],
                   [trade, encode(trades[:2])], [b"no topic", encode(trades[:1])], [bar, b"\x81\xa3src\xa1\xff"],
                   [trade, encode(trades[2:])], [bar, encode(msgspec.structs.replace(_bar("MSFT", 2.0), seq=1,
                                                                                      src="raw"))]):
        sock.send_multipart(frames)
    sock.close()
    wait_until(lambda: (ask(public, {"op": "seqs", "src": "raw"}, timeout=5, curve=keys) or {}).get("seqs")
               == {"trade.MSFT": 3, "bar.60s.MSFT": 1}, 30, "the good messages")
    kept = ask(public, {"op": "history", "pattern": "", "since_ns": 0}, timeout=5, curve=keys)["messages"]
    assert [(m[0], m[1], m[2]) for m in kept if m[0].endswith("MSFT")] == [
        ("trade.MSFT", 1, 2), ("trade.MSFT", 3, 3), ("bar.60s.MSFT", 1, 1)]


def test_bad_requests_are_answered_and_counted(service):
    public, keys, _, _, svc = service
    reply = ask(public, {"op": "everything"}, timeout=5, curve=keys)
    assert reply == {"ok": False, "error": "bad request: `op` must be one of history, last, seqs; was 'everything'"}
    assert ask(public, {"op": "history"}, timeout=5, curve=keys)["ok"] is False
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    keys.apply(sock)
    sock.connect(public)
    sock.send(b"\xc1")  # never valid MessagePack
    assert sock.poll(5000)
    assert msgspec.msgpack.decode(sock.recv())["ok"] is False
    sock.close()
    assert svc.bad_requests == 3


def test_each_endpoint_lets_in_only_its_keys(service):
    public, public_client, internal_client, internal, _ = service
    request = {"op": "seqs", "src": "w0"}
    _, stranger = plant_keys()
    assert ask(public, request, timeout=1) is None  # no key
    assert ask(public, request, timeout=1, curve=internal_client) is None  # the plant's internal key, not allowed here
    wrong_server = type(public_client)(server_key=public_client.server_key, public_key=stranger.public_key,
                                       secret_key=stranger.secret_key)
    assert ask(public, request, timeout=1, curve=wrong_server) is None
    inside = ask(internal_recovery_endpoint(internal), request, timeout=5, curve=internal_client)
    assert inside == {"ok": True, "seqs": {"bar.60s.AAPL": 30, "bar.60s.AAPLX": 1}}
