"""Hostile requests to the services that take them from outside: the hub's recovery service over
a real ZeroMQ socket (each request gets an error reply, or is dropped when it is not a request at
all, and the service goes on answering), and the web view's watch messages.

The service runs with its output journal (so requests reach the disk paths too) behind a real
proxy that a publisher fed; requests are arbitrary MessagePack maps built from the protocol's
own keys with values of every type and size, and raw frames a DEALER may send. Example counts
are fixed and the database is off, so a CI run is bounded and repeatable.
"""

from __future__ import annotations

import msgspec
import pytest
import zmq
from _common import free_port, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.bus import wire
from streamctl.bus.history import HistoryConfig
from streamctl.bus.proxy import Proxy
from streamctl.bus.publisher import Publisher
from streamctl.bus.recovery import RecoveryService, ask
from streamctl.web.server import _watch_request

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _bar(close: float) -> wire.Bar:
    return wire.Bar(symbol="AAPL", interval="60s", ts_start=0, ts_end=60_000_000_000, open=close, high=close,
                    low=close, close=close, volume=1.0, trades=1, vwap=close, ts_event=1, ts_recv=1)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A proxy, its recovery service with an output journal, and 20 bars published through it."""
    tmp = tmp_path_factory.mktemp("recovery")
    capture = "inproc://fuzz-recovery-capture"
    proxy = Proxy(frontend=f"ipc://{tmp}/in.ipc", backend="tcp://127.0.0.1:*", sndhwm=1000, capture=capture)
    proxy.start()
    public = f"tcp://127.0.0.1:{free_port()}"
    assert proxy.context is not None and proxy.frontend_endpoint is not None
    svc = RecoveryService(proxy.context, capture=capture, topic_bytes=2048, binds=[(public, None, "public")],
                          history=HistoryConfig(enabled=True), history_dir=str(tmp / "history"))
    svc.start()
    pub = Publisher(proxy.frontend_endpoint, src="w0")
    try:
        assert pub.wait_subscribed(30)
        for i in range(1, 21):
            pub.publish("bar.60s.AAPL", _bar(float(i)))
        wait_until(lambda: (ask(public, {"op": "seqs", "src": "w0"}, timeout=5) or {}).get("seqs")
                   == {"bar.60s.AAPL": 20}, 30, "the service to hold every bar")
        yield public, svc
    finally:
        pub.close()
        svc.stop()
        proxy.stop()


_HUGE = [2**64 - 1, 2**63, -(2**63), 2**63 - 1, -1, 0, 10**18]
_VALUES = st.one_of(st.none(), st.booleans(), st.sampled_from(_HUGE), st.integers(-(2**63), 2**64 - 1),
                    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, 0.5]), st.floats(), st.text(max_size=12), st.sampled_from(["bar.60s.AAPL", "bar.", "", "\u00e9", "\x00",
                                                                         "a\nb", "w0"]),
                    st.binary(max_size=8), st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
                    st.dictionaries(st.text(max_size=2), st.integers(-(2**63), 2**64 - 1), max_size=2))
_NUMBERS = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, 0.5, *_HUGE]) | _VALUES
_OPS = st.sampled_from(["history", "last", "seqs"])
_REQUESTS = st.one_of(
    st.dictionaries(st.sampled_from(["op", "pattern", "topic", "from_seq", "since_ns", "src", "x"]), _VALUES,
                    max_size=5),
    st.fixed_dictionaries({"op": _OPS, "pattern": _VALUES, "since_ns": _NUMBERS}),
    st.fixed_dictionaries({"op": _OPS, "topic": _VALUES, "from_seq": _NUMBERS}),
    st.fixed_dictionaries({"op": _OPS, "src": _VALUES, "pattern": _VALUES}))


def _request(public: str, payload: bytes, timeout: float = 10.0) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(public)
        sock.send(payload)
        assert sock.poll(int(timeout * 1000)), "the service stopped answering"
        return msgspec.msgpack.decode(sock.recv())
    finally:
        sock.close(0)


def test_hostile_requests_get_an_answer_and_the_service_goes_on(service):
    public, svc = service

    @FUZZ
    @given(request=_REQUESTS | st.binary(max_size=40).map(lambda b: ("raw", b)))
    def run(request):
        payload = request[1] if isinstance(request, tuple) else msgspec.msgpack.encode(request)
        reply = _request(public, payload)
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
        if reply["ok"] is False:
            assert reply["error"].startswith("bad request: ") and "\n" not in reply["error"]

    run()
    assert _request(public, msgspec.msgpack.encode({"op": "seqs", "src": "w0"}))["seqs"] == {"bar.60s.AAPL": 20}


def test_frames_a_req_socket_never_sends_do_not_stop_the_service(service):
    public, svc = service
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(public)
    try:
        for frames in ([b""], [b"", b"", b""], [b"\xc1"], [b"", msgspec.msgpack.encode({"op": "seqs", "src": "w0"})]):
            dealer.send_multipart(frames)
    finally:
        dealer.close(0)
    assert _request(public, msgspec.msgpack.encode({"op": "seqs", "src": "w0"}))["seqs"] == {"bar.60s.AAPL": 20}


@pytest.mark.parametrize("request_", [
    {"op": "history", "pattern": "bar.", "since_ns": float("inf")},  # int(inf): OverflowError ended the thread
    {"op": "history", "topic": "bar.60s.AAPL", "from_seq": float("-inf")},
    {"op": "history", "pattern": "bar.", "since_ns": float("nan")},
    {"op": "history", "topic": "bar.60s.AAPL", "from_seq": 2**64 - 1},
    {"op": "history", "topic": "\u00e9", "from_seq": 1},
])
def test_a_number_or_text_no_request_can_hold_is_a_bad_request(service, request_):
    public, _ = service
    reply = _request(public, msgspec.msgpack.encode(request_))
    assert reply["ok"] is False and reply["error"].startswith("bad request: ")
    assert _request(public, msgspec.msgpack.encode({"op": "seqs", "src": "w0"}))["seqs"] == {"bar.60s.AAPL": 20}


def test_a_time_sent_as_a_double_is_still_taken(service):
    """JavaScript's MessagePack encoders write integers past 2**53 as doubles."""
    public, _ = service
    reply = _request(public, msgspec.msgpack.encode({"op": "history", "pattern": "bar.", "since_ns": 0.0}))
    assert reply["ok"] is True and [m[1] for m in reply["messages"]] == list(range(1, 21))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                         ["watch", "symbol", "interval", ""]), inner, max_size=3), max_leaves=8)


@FUZZ
@given(message=_JSON.map(lambda v: msgspec.json.encode(v).decode()) | st.text(max_size=80))
def test_a_web_watch_message_is_a_symbol_a_topic_can_carry_or_refused(message):
    """The browser's message names a symbol to subscribe to: anything else is refused (None),
    and what is taken always makes an exact topic (never a prefix of every symbol's)."""
    watch = _watch_request(message)
    if watch is not None:
        symbol, interval = watch
        assert wire.subscription_prefix(f"trade.{symbol}").endswith(wire.TOPIC_TERMINATOR) and interval
