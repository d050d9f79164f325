"""Our Databento live session against the local gateway and against broken gateways."""

from __future__ import annotations

import socket
import threading
import time

import msgspec
import numpy as np
import pytest
from _data import sample
from _databento import (
    ESH1_TRADES_V3,
    ESM4_MBO,
    ESU4_MBP1,
    ESU4_TRADES,
    KEY,
    Ctx,
    collect,
    feed,
    open_session,
    options,
)

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file
from streamctl.ingest.formats.dbn.encoder import encode_metadata
from streamctl.ingest.vendor_api import SessionError
from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.options import Options
from streamctl.ingest.vendors.databento.session import Session
from streamctl.shm.records import Kind

COMPARED = ["ts_event", "price", "price2", "size", "size2", "sequence", "kind", "side", "flags"]


def decode_file(path: str) -> np.ndarray:
    """What the shared decoder makes of the file itself (vendor instrument ids)."""
    decoder = DbnDecoder(ts_recv="record")
    decoder.write(read_file(path))
    return decoder.finish().records


@pytest.mark.parametrize(
    ("rel", "schemas", "symbol"),
    [
        (ESU4_TRADES, ["trades"], "ESU4"),
        (ESU4_MBP1, ["mbp-1"], "ESU4"),
        (ESH1_TRADES_V3, ["trades"], "ESH1"),
        (ESM4_MBO, ["mbo"], "ESM4"),
    ],
)
def test_session_receives_the_file_records(venues, rel, schemas, symbol):
    path = sample(rel)
    expected = decode_file(path)
    venue = venues.start([path])
    before = time.time_ns()
    session, ctx = open_session(venue.port, symbol, schemas=schemas)
    try:
        got = collect(session, lambda r: len(r) >= len(expected))
    finally:
        session.close()
    assert len(got) == len(expected)
    for name in COMPARED:
        assert (got[name] == expected[name]).all(), name
    assert (got["instrument_id"] == ctx.ids[symbol]).all()  # our registry id, not the vendor's
    assert (got["ts_recv"] >= before).all()  # live ingest time
    assert session.instruments() == [ctx.ids[symbol]]
    assert ctx.counts["malformed"] == 0 and ctx.counts["errors"] == 0
    assert ctx.kinds()[0] == "connected"
    assert any(kind == "system" and "succeeded" in message for kind, message, _ in ctx.events)  # the ack


def test_two_schemas_one_session(venues):
    trades, mbp1 = sample(ESU4_TRADES), sample(ESU4_MBP1)
    n_trades, n_mbp1 = len(decode_file(trades)), len(decode_file(mbp1))
    venue = venues.start([trades, mbp1], heartbeat_interval=0.05)
    session, ctx = open_session(venue.port, "ESU4", schemas=["trades", "mbp-1"])
    try:
        got = collect(session, lambda r: len(r) >= n_trades + n_mbp1)
        collect(session, lambda r: session.heartbeats >= 2)  # heartbeats are bookkeeping, not events
    finally:
        session.close()
    assert len(got) == n_trades + n_mbp1
    assert np.count_nonzero(got["kind"] == Kind.TRADE) == 2 * 120  # trades file + T records of mbp-1
    assert "system" in ctx.kinds() and not any("Heartbeat" in m for _, m, _ in ctx.events)


def test_auth_failure_does_not_retry(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)], api_key="db-" + "Q" * 27 + "QWERT")
    session = Session(options(venue.port), feed("ESH1"), Ctx())
    with pytest.raises(SessionError, match="refused authentication: Authentication failed") as info:
        session.open()
    assert info.value.retry is False and info.value.code == 1
    assert KEY not in str(info.value)


def test_unknown_symbol_is_an_error_event_and_counter(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)])
    session, ctx = open_session(venue.port, "ESH1", "NOPE")
    try:
        got = collect(session, lambda r: len(r) >= 4)
        collect(session, lambda r: ctx.counts["errors"] >= 1, timeout=5)
    finally:
        session.close()
    assert len(got) == 4
    errors = [(m, c) for k, m, c in ctx.events if k == "error"]
    assert errors == [("gateway error: Failed to resolve symbol(s) for trades: NOPE", 4)]
    assert ctx.counts["errors"] == 1
    assert "NOPE" not in ctx.ids  # never registered: the gateway did not map it


def test_gateway_closing_ends_the_session_after_its_records(venues):
    venue = venues.start([sample(ESU4_TRADES)], close_at_end=True)
    session, _ = open_session(venue.port, "ESU4")
    got = []
    try:
        with pytest.raises(SessionError, match="gateway closed the connection") as info:
            collect(session, lambda r: got.append(len(r)) and False)
    finally:
        session.close()
    assert got[-1] == 120  # every record was returned before the error
    assert info.value.retry is True


def test_nothing_listening_is_a_retryable_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    session = Session(options(port), feed("ESU4"), Ctx())
    with pytest.raises(SessionError, match=f"cannot connect to gateway 127.0.0.1:{port}") as info:
        session.open()
    assert info.value.retry is True


def test_options():
    opt = options(13000, gateway=None, schemas=["trades", "mbo"])
    assert opt.host == "glbx-mdp3.lsg.databento.com" and opt.liveness == 40
    assert KEY not in repr(opt) and KEY not in str(opt)
    assert options(1, key="abc").check() == ("key", "must be an API key of at least 5 characters", "<hidden>")
    assert options(1, liveness_timeout_s=5, heartbeat_interval_s=10).check()[0] == "liveness_timeout_s"
    with pytest.raises(msgspec.ValidationError, match="schemas"):
        options(1, schemas=["ohlcv-1s"])
    assert opt.resume and not options(1, resume=False).resume
    with pytest.raises(msgspec.ValidationError, match=r"Expected `bool`, got `str` - at `\$.resume`"):
        msgspec.convert({"dataset": "GLBX.MDP3", "schemas": ["trades"], "key": KEY, "resume": "often"}, Options,
                        strict=False)  # as the feed converts its options
    with pytest.raises(msgspec.ValidationError, match="unknown field `bogus`"):
        msgspec.convert({"dataset": "GLBX.MDP3", "schemas": ["trades"], "key": KEY, "bogus": 1}, Options)


# ---------------------------------------------------------------------------------------------- broken gateways


class FakeGateway:
    """A gateway that completes the control phase, then writes `payload` and idles."""

    def __init__(self, payload: bytes, *, close: bool = False):
        self.payload = payload
        self.close = close
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            conn.sendall(b"lsg_version=0.4.2\ncram=abc\n")
            buf = lsg.LineBuffer()
            while True:
                line = buf.next_line()
                if line is None:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf.feed(data)
                elif line.startswith(b"auth="):
                    conn.sendall(b"success=1|session_id=9\n")
                elif line.startswith(b"start_session"):
                    break
            conn.sendall(self.payload)
            if not self.close:
                self.done.wait(10)

    def stop(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_gateway():
    made: list[FakeGateway] = []

    def make(payload: bytes, **kw) -> FakeGateway:
        made.append(FakeGateway(payload, **kw))
        return made[-1]

    try:
        yield make
    finally:
        for gw in made:
            gw.stop()


def _good_stream() -> bytes:
    """A real v3 file's bytes: metadata with mappings, then 4 trades; plus a mapping record."""
    from streamctl.ingest.formats.dbn.encoder import encode_symbol_mapping

    data = read_file(sample(ESH1_TRADES_V3))
    meta_end = 8 + int.from_bytes(data[4:8], "little")
    mapping = encode_symbol_mapping(version=3, instrument_id=5482, ts_event=0, stype_in_symbol="ESH1",
                                    stype_out_symbol="ESH1", start_ts=0, end_ts=0)
    return data[:meta_end] + mapping + data[meta_end:]


def _version_9() -> bytes:
    meta = bytearray(encode_metadata(version=3, dataset="GLBX.MDP3", start=0))
    meta[3] = 9
    return bytes(meta)


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(200), "not valid DBN: not DBN: magic"),
        (_version_9(), "unsupported DBN `version` 9"),
    ],
    ids=["not-dbn", "unsupported-version"],
)
def test_a_stream_that_is_not_dbn_is_a_final_error(fake_gateway, stream, error):
    gw = fake_gateway(stream)
    session, _ = open_session(gw.port, "ESH1")
    try:
        with pytest.raises(SessionError, match=error) as info:
            collect(session, lambda r: False)
    finally:
        session.close()
    assert info.value.retry is False


def test_records_before_the_damage_are_returned(fake_gateway):
    stream = _good_stream()
    gw = fake_gateway(stream + bytes([3, 0xEE]) + b"\xff" * 50 + stream[-48:], close=True)
    session, ctx = open_session(gw.port, "ESH1")
    batches: list[np.ndarray] = []
    try:
        with pytest.raises(SessionError, match="closed the connection"):
            collect(session, lambda r: batches.append(r) and False)
    finally:
        session.close()
    got = batches[-1]
    assert len(got) == 5  # the 4 trades, then the one after the damage
    assert (got["price"][:4] == decode_file(sample(ESH1_TRADES_V3))["price"]).all()
    assert ctx.counts["malformed"] >= 1
    assert "malformed" in ctx.kinds()
    assert session.instruments() == [ctx.ids["ESH1"]]


def test_unmapped_instruments_are_counted(fake_gateway):
    data = read_file(sample(ESH1_TRADES_V3))  # no SymbolMappingMsg: the ids are unknown
    gw = fake_gateway(data, close=True)
    session, ctx = open_session(gw.port, "ESH1")
    try:
        with pytest.raises(SessionError, match="closed the connection"):
            collect(session, lambda r: False)
    finally:
        session.close()
    assert ctx.counts["malformed"] == 4
    assert session.instruments() == []


def test_liveness_timeout(fake_gateway):
    gw = fake_gateway(encode_metadata(version=3, dataset="GLBX.MDP3", start=0))  # then silence
    session, _ = open_session(gw.port, "ESH1", heartbeat_interval_s=1, liveness_timeout_s=1.2)
    start = time.monotonic()
    try:
        with pytest.raises(SessionError, match=r"no data or heartbeat from the gateway for 1.2 s") as info:
            collect(session, lambda r: False)
    finally:
        session.close()
    assert time.monotonic() - start >= 1.0
    assert info.value.retry is True
