"""Hostile and merely unusual input thrown at the vendors' parsers: Alpaca frames, a hostile IB
gateway, CME MDP 3.0 packets and captures, and the Databento live stream's records.

Each surface may refuse its input only with its own documented error (counted and skipped, see
docs/failures.md); any other exception, a hang (bounded by pytest-timeout), or a record the
validation screen accepts with a value other than what the vendor sent, is a failure. Values are
checked against an independent reading where one exists (msgpack-python's Timestamp, Python's
datetime, databento_dbn). Example counts are fixed and the database is off, so a CI run is bounded and repeatable.
"""

from __future__ import annotations

import calendar
import datetime
import json
import queue
import socket
import struct
import threading
import time
from types import SimpleNamespace

import databento_dbn as dbn_ref
import msgpack
import msgspec
import numpy as np
import pytest
from _databento import Ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.bus.wire import Event, EventKind
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError
from streamctl.ingest.formats.dbn.encoder import encode_metadata, encode_symbol_mapping, record_header
from streamctl.ingest.validation import refusals
from streamctl.ingest.vendors.alpaca import messages as am
from streamctl.ingest.vendors.alpaca.parsing import FrameDecoder
from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import BAD_REASONS, Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.pcap import Datagram, read_pcap, write_pcap
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.ingest.vendors.cme.synthetic import generate
from streamctl.ingest.vendors.ibkr import protocol as ibapi
from streamctl.ingest.vendors.ibkr.contracts import Contract, encode_details
from streamctl.ingest.vendors.ibkr.options import Options as IbkrOptions
from streamctl.ingest.vendors.ibkr.parsing import MarketData
from streamctl.ingest.vendors.ibkr.session import Session as IbkrSession
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind, Side

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TS = 1_700_000_000_123_456_789
NS = 1_000_000_000


def _accepted(records: np.ndarray) -> np.ndarray:
    """The records the feed loop's screen would let through."""
    assert records.dtype == RECORD_DTYPE
    codes, _ = refusals(records)
    return records[codes == 0]


# ---- Alpaca
_ODD_FLOATS = st.sampled_from([0.0, -0.0, 1e-12, 5528.25, -3.5, 9.2e9, 9.3e9, 1e300, float("inf"),
                               float("-inf"), float("nan"), 2.0**63]) | st.floats()
_ODD_INTS = st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
_ODD_TIMES = st.one_of(
    st.builds(lambda s, n: msgspec.msgpack.Ext(-1, msgpack.Timestamp(s, n).to_bytes()),
              st.integers(-(2**63), 2**63 - 1), st.integers(0, NS - 1)),
    st.builds(lambda s, n: msgspec.msgpack.Ext(-1, n.to_bytes(4, "big") + s.to_bytes(8, "big", signed=True)),
              st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**32 - 1)),  # nanoseconds past 1e9 too
    st.builds(lambda v: msgspec.msgpack.Ext(-1, v.to_bytes(8, "big")), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: msgspec.msgpack.Ext(-1, v.to_bytes(4, "big")), st.integers(0, 2**32 - 1)),
    st.sampled_from(["2024-07-01T23:58:01.218218853Z", "1000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                     "2262-04-11T23:47:16.854775808Z", "2021Z", "2024-02-30T00:00:00Z", "2024-07-01T24:00:00Z",
                     "2024-07-01T23:59:60Z", "2024-07-01T23:58:01+99:99", "NaTZ", "2024-07-01 23:58:01Z",
                     "2024-07-01T23:58:01.1234567890Z", "\u0662024-07-01T23:58:01Z", "2024-07-01t23:58:01z"]),
    st.text(max_size=30), st.integers(), st.binary(max_size=16))
_SYMBOLS = st.sampled_from(["AAPL", "BTC/USD", "", "\u00e9\u00e9", "A\x00B", "A\nB", "X" * 80])


def _alpaca_message():
    trade = st.fixed_dictionaries({"T": st.just("t"), "S": _SYMBOLS, "p": _ODD_FLOATS, "s": _ODD_FLOATS,
                                   "t": _ODD_TIMES}, optional={"i": _ODD_INTS, "tks": st.sampled_from("BS?")})
    quote = st.fixed_dictionaries({"T": st.just("q"), "S": _SYMBOLS, "bp": _ODD_FLOATS, "bs": _ODD_FLOATS,
                                   "ap": _ODD_FLOATS, "as": _ODD_FLOATS, "t": _ODD_TIMES})
    correction = st.fixed_dictionaries({"T": st.just("c"), "S": _SYMBOLS, "oi": _ODD_INTS, "op": _ODD_FLOATS,
                                        "os": _ODD_FLOATS, "ci": _ODD_INTS, "cp": _ODD_FLOATS,
                                        "cs": _ODD_FLOATS, "t": _ODD_TIMES})
    cancel = st.fixed_dictionaries({"T": st.just("x"), "S": _SYMBOLS, "i": _ODD_INTS, "p": _ODD_FLOATS,
                                    "s": _ODD_FLOATS, "a": st.sampled_from("CEZ"), "t": _ODD_TIMES})
    control = st.fixed_dictionaries({"T": st.sampled_from(["error", "success", "subscription", "b", "zz"]),
                                     "code": _ODD_INTS, "msg": st.text(max_size=10)})
    return st.one_of(trade, quote, correction, cancel, control)


def _expected_ns(t) -> int | None:
    """The event time of `t` by an independent reading, None where it is not a valid time."""
    if isinstance(t, msgspec.msgpack.Ext):
        try:  # msgpack-python's reading of the Timestamp
            ns = msgpack.unpackb(msgspec.msgpack.encode(t)).to_unix_nano()
        except ValueError:
            return None
    elif isinstance(t, str):
        try:
            parsed = datetime.datetime.fromisoformat(t.replace("z", "Z"))
        except ValueError:
            return None
        if not t.isascii() or parsed.tzinfo is None or len(t) > 35 or " " in t:
            return None
        whole = calendar.timegm(parsed.utctimetuple())
        ns = whole * NS + parsed.microsecond * 1000 + (int(t[20:29].ljust(9, "0")) % 1000 if t[19] == "." else 0)
    else:
        return None
    return ns if -(2**63) <= ns < 2**63 else None


def _encode(frame: list, encoding: str) -> bytes:
    """The frame as the venue would send it; b"" where the encoding cannot carry a value."""
    try:
        if encoding == "json":
            return json.dumps(frame, allow_nan=False).encode()
        return msgspec.msgpack.encode(frame)
    except (OverflowError, ValueError, TypeError):  # NaN in JSON, ints past 64 bits
        return b""


@FUZZ
@given(frame=st.lists(_alpaca_message(), max_size=6), encoding=st.sampled_from(["msgpack", "json"]))
def test_alpaca_frames_with_odd_values(frame, encoding):
    """Every message is a record, a control message, malformed or skipped, and a record the screen
    accepts carries exactly the vendor's time, price and trade id."""
    if encoding == "json":
        frame = [{k: v for k, v in msg.items() if not isinstance(v, (msgspec.msgpack.Ext, bytes))} for msg in frame]
    blob = _encode(frame, encoding)
    if not blob:
        return
    out = FrameDecoder(encoding, lambda s: 1 if s == "AAPL" else 2 if s.isalpha() and len(s) < 20 else 0).decode(
        blob, TS)
    assert len(out.records) + len(out.control) + out.malformed + sum(out.skipped.values()) == len(frame)
    kept = _accepted(out.records)
    data = [msg for msg in frame if msg.get("T") in ("t", "q", "c", "x")]
    for record in kept:
        matches = [msg for msg in data if _expected_ns(msg.get("t")) == int(record["ts_event"])]
        assert matches, f"record {record} has a time no message carried"
        price_field = {"t": "p", "q": "bp", "c": "cp", "x": "p"}
        assert any(round(msg[price_field[msg["T"]]] * NS) == int(record["price"]) for msg in matches
                   if np.isfinite(msg[price_field[msg["T"]]]) and abs(msg[price_field[msg["T"]]]) < 9.3e9)


@FUZZ
@given(seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(0, NS - 1))
def test_alpaca_timestamps_agree_with_msgpack_python(seconds, nanos):
    raw = msgspec.msgpack.decode(msgpack.packb(msgpack.Timestamp(seconds, nanos)), type=msgspec.Raw)
    expected = seconds * NS + nanos
    if -(2**63) <= expected < 2**63:
        assert am.timestamp_ns(raw) == expected
    else:
        with pytest.raises(ValueError):
            am.timestamp_ns(raw)


@FUZZ
@given(when=st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
       nanos=st.integers(0, 999), digits=st.integers(0, 9),
       zone=st.sampled_from(["Z", "z", "+00:00", "-04:00", "+05:30", "+23:59"]), json_frame=st.booleans())
def test_alpaca_rfc3339_agrees_with_datetime(when, nanos, digits, zone, json_frame):
    fraction = f"{when.microsecond:06d}{nanos:03d}"[:digits]
    text = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    offset = 0 if zone in "Zz" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    expected = (calendar.timegm(when.timetuple()) - offset) * NS + int(fraction.ljust(9, "0") if digits else 0)
    if json_frame:  # through the decoder's vectorized path
        frame = [{"T": "t", "S": "AAPL", "p": 1.0, "s": 1, "t": text}]
        out = FrameDecoder("json", lambda s: 1).decode(json.dumps(frame), TS)
        assert out.records["ts_event"].tolist() == ([expected] if -(2**63) <= expected < 2**63 else [])
    elif -(2**63) <= expected < 2**63:
        assert am.timestamp_ns(msgspec.json.decode(json.dumps(text), type=msgspec.Raw)) == expected


# ---- IBKR (a hostile gateway on 127.0.0.1 speaking the TWS API framing)
class _Gateway(threading.Thread):
    """Shakes hands, answers the contract and market-data requests of one session, then sends
    whatever frames the test queues, with ``{req}`` replaced by the trades, quotes or depth request id."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.outbox: queue.Queue[bytes] = queue.Queue()
        self.requests: dict[str, int] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        conn, _ = self.server.accept()
        conn.settimeout(0.02)
        reader, buf, greeted = ibapi.FrameReader(), b"", False
        while True:
            try:
                data = conn.recv(1 << 16)
                if not data:
                    return
                if not greeted:
                    buf += data
                    if len(buf) < 8:
                        continue
                    reader.feed(buf[4:])
                    greeted = True
                else:
                    reader.feed(data)
            except TimeoutError:
                pass
            except OSError:
                return
            for f in reader.messages():
                self._answer(conn, f)
            while not self.outbox.empty():
                conn.sendall(self.outbox.get())

    def _answer(self, conn: socket.socket, f: list[bytes]) -> None:
        mid = int(f[0]) if f and f[0].isdigit() else -1
        if f and f[0].startswith(b"v"):
            conn.sendall(ibapi.encode(ibapi.MAX_VERSION, "20240701 23:58:01 UTC"))
        elif mid == ibapi.Out.START_API:
            conn.sendall(ibapi.encode(15, 1, "DU1") + ibapi.encode(9, 1, 1))
        elif mid == ibapi.Out.REQ_CONTRACT_DATA:
            details = encode_details(int(f[2]), Contract(con_id=7, symbol="AAPL", sec_type="STK", local_symbol="AAPL"))
            conn.sendall(ibapi.encode(*details) + ibapi.encode(52, 1, int(f[2])))
        elif mid == ibapi.Out.REQ_TICK_BY_TICK_DATA:
            self.requests["quotes" if b"BidAsk" in f else "trades"] = int(f[1])
        elif mid == ibapi.Out.REQ_MKT_DEPTH:
            self.requests["depth"] = int(f[2])
        elif mid == ibapi.Out.REQ_CURRENT_TIME:
            conn.sendall(ibapi.encode(49, 1, int(time.time())))
        if len(self.requests) == 3:
            self.ready.set()


class _EncodingCtx(Ctx):
    """The test context, encoding each event as the feed loop publishes it (an event's `code`
    must fit MessagePack's integers)."""

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        msgspec.msgpack.encode(Event(source="ib", kind=EventKind(kind), message=message, code=code, ts=1))
        super().event(kind, message, code=code)


@pytest.fixture(scope="module")
def hostile_gateway():
    gateway = _Gateway()
    gateway.start()
    ctx = _EncodingCtx()
    options = msgspec.convert({"port": gateway.port, "sec_type": "STK", "exchange": "SMART", "depth_rows": 5,
                               "max_messages_per_s": 50}, IbkrOptions)
    session = IbkrSession(options, SimpleNamespace(name="ib", symbols=["AAPL"]), ctx)
    session.open()
    deadline = time.monotonic() + 30
    while not gateway.ready.is_set() and time.monotonic() < deadline:
        session.poll(0.05)
    assert gateway.ready.is_set(), "the session never requested its market data"
    yield gateway, session, ctx
    session.close()
    gateway.server.close()


T = 1_719_878_281
_IB_NUMBERS = st.one_of(  # (text, the value IB means, or None where the text is not a number)
    st.builds(lambda i, k: (f"{'-' if i < 0 else ''}{abs(i) // 10**k}" + (f".{abs(i) % 10**k:0{k}d}" if k else ""),
                            i * 10 ** (9 - k)), st.integers(-(10**9), 10**9), st.integers(0, 6)),
    st.sampled_from([("1E5", 10**14), ("2.5e-1", 250_000_000), ("nan", None), ("inf", None), ("-inf", None),
                     ("1e400", None), ("1_5", None), (" 2", None), ("+1", None), ("0x10", None),
                     ("\u0661", None), ("", None), ("-", None), (".", None), ("1.2.3", None),
                     ("9" * 30, None)]))
_IB_TIMES = st.one_of(st.builds(lambda s: (str(s), s * NS), st.integers(T - 10**6, T + 10**6)),
                      st.sampled_from([(str(2**64 + T), None), (str(18446744073 + T), None), ("1_719878281", None),
                                       (" 1719878281", None), ("9" * 19, None), ("9" * 40, None), ("", None),
                                       ("-1", None)]))


def _ib_frames():
    trade = st.builds(lambda t, p, s: (("99", "{trades}", 1, t[0], p[0], s[0], 0, "X", ""), ("t", t[1], p[1], s[1])),
                      _IB_TIMES, _IB_NUMBERS, _IB_NUMBERS)
    quote = st.builds(lambda t, b, a: (("99", "{quotes}", 3, t[0], b[0], a[0], "1", "2", 0), ("q", t[1], b[1], a[1])),
                      _IB_TIMES, _IB_NUMBERS, _IB_NUMBERS)
    depth = st.builds(lambda pos, op, side, p: (("12", 1, "{depth}", pos, op, side, p[0], "3"), ("d", None, p[1], None)),
                      st.sampled_from(["0", "1", "-1", "01", "99999999999999999999"]), st.sampled_from(["0", "1", "2", "7"]),
                      st.sampled_from(["0", "1", "01", " 1", "2"]), _IB_NUMBERS)
    error = st.builds(lambda req, code: (("4", 2, req, code, "a\nmessage\x1b[2J", ""), ("e", None, None, None)),
                      st.sampled_from(["-1", "{depth}", "99", "x"]),  # a refused trades request would end them
                      st.sampled_from(["2104", "200", "162", str(2**31), str(2**70), "-5", "1_0", ""]))
    junk = st.builds(lambda fields: (tuple(fields), ("j", None, None, None)),
                     st.lists(st.sampled_from(["99", "12", "13", "4", "10", "52", "777", "", "x", "{trades}", "1",
                                               "3", str(T)]), max_size=9))
    return st.one_of(trade, quote, depth, error, junk)


def test_ibkr_session_survives_a_hostile_gateway(hostile_gateway):
    """Whatever the gateway sends, `poll` returns records or raises `SessionError` only, and a record
    the screen accepts has the time and prices that were sent."""
    gateway, session, ctx = hostile_gateway
    sentinel = iter(range(1, 10**6))

    @FUZZ
    @given(frames=st.lists(_ib_frames(), max_size=8))
    def run(frames):
        mark = next(sentinel)
        sent = [*frames, (("99", "{trades}", 1, str(T), f"{mark}.5", "1", 0, "X", ""), ("t", T * NS, mark * NS + NS // 2, 1))]
        for fields, _ in sent:
            gateway.outbox.put(ibapi.encode(*[str(x).format(**gateway.requests) for x in fields]))
        got = [np.zeros(0, RECORD_DTYPE)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (got[-1]["price"] == mark * NS + NS // 2).any():
            batch = session.poll(0.05)
            if batch is not None:
                got.append(batch.copy())
        records = np.concatenate(got)
        assert (records["price"] == mark * NS + NS // 2).any(), "the session stopped delivering"
        trades = {(t, p) for _, (k, t, p, _) in sent if k == "t" and t is not None and p is not None}
        quotes = {(t, b, a) for _, (k, t, b, a) in sent if k == "q" and t is not None}
        book_prices = {p for _, (k, _, p, _) in sent if k == "d" and p is not None}
        for r in _accepted(records):
            ts, price = int(r["ts_event"]), int(r["price"])
            if r["kind"] == Kind.TRADE:
                assert (ts, price) in trades
            elif r["kind"] == Kind.QUOTE:
                bid = None if price == UNDEF_PRICE else price
                ask = None if int(r["price2"]) == UNDEF_PRICE else int(r["price2"])
                assert any(t == ts and bid in (b, None) and ask in (a, None) for t, b, a in quotes)
            else:
                assert r["kind"] == Kind.BOOK and (price in book_prices or r["size"] == 0)

    run()


@FUZZ
@given(stream=st.lists(st.binary(max_size=40) | st.builds(lambda n, b: n.to_bytes(4, "big") + b,
                                                          st.integers(0, 2**32 - 1), st.binary(max_size=30)),
                       max_size=10),
       cut=st.integers(1, 64))
def test_ibkr_framing_survives_truncated_and_lying_frames(stream, cut):
    """The compiled scan and the frame reader agree on every frame boundary, however the bytes
    arrive, and stop (oversized) exactly where a frame announces more than the limit."""
    data = b"".join(stream)
    md, seen = MarketData(), []
    consumed, pending, oversized = 0, bytearray(), False
    for start in range(0, len(data), cut):
        pending += data[start:start + cut]
        scanned = md.decode(pending, seen.append)
        del pending[:scanned.consumed]
        consumed += scanned.consumed
        if scanned.oversized:
            oversized = True
            break
    reader = ibapi.FrameReader()
    reader.feed(data)
    try:
        framed = reader.messages()
    except ibapi.FrameError:
        assert oversized
    else:
        assert not oversized and seen == framed and consumed == len(data) - reader.pending


def _until_sentinel(gateway, session, frames: list[tuple], mark: int) -> np.ndarray:
    """Send `frames` then a valid trade priced ``mark``; every record up to that trade."""
    for fields in [*frames, ("99", "{trades}", 1, str(T), str(mark), "1", 0, "X", "")]:
        gateway.outbox.put(ibapi.encode(*[str(x).format(**gateway.requests) for x in fields]))
    got = [np.zeros(0, RECORD_DTYPE)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (got[-1]["price"] == mark * NS).any():
        batch = session.poll(0.05)
        if batch is not None:
            got.append(batch.copy())
    records = np.concatenate(got)
    assert (records["price"] == mark * NS).any(), "the session stopped delivering"
    return records[records["price"] != mark * NS]


@pytest.mark.parametrize("fields", [
    ("99", "{trades}", 1, str(18446744073 + T), "1.5", "1", 0, "X", ""),  # the kernel wrapped it to T - 0.7 s
    ("99", "{trades}", 1, str(10**30), "1.5", "1", 0, "X", ""),  # OverflowError out of poll
    ("99", "{trades}", 1, str(T), "1_5", "1", 0, "X", ""),  # float() read 15
    ("99", "{quotes}", 3, str(T), "1.5", "nan", "1", "1", 0),
    ("4", 2, "{trades}", str(2**70), "text", ""),  # the error event's code did not encode: OverflowError
    (),  # an empty frame: IndexError out of poll
], ids=["wrapped-time", "huge-time", "underscore", "nan", "huge-code", "empty"])
def test_ibkr_odd_fields_are_malformed(hostile_gateway, fields):
    gateway, session, ctx = hostile_gateway
    before = ctx.counts["malformed"]
    assert len(_accepted(_until_sentinel(gateway, session, [fields], 17))) == 0
    assert ctx.counts["malformed"] == before + 1


def test_ibkr_depth_side_is_the_side_the_rows_took(hostile_gateway):
    """A side written ``01`` went into the bid rows, but its record said ask."""
    gateway, session, _ = hostile_gateway
    records = _until_sentinel(gateway, session, [("12", 1, "{depth}", 0, 0, "01", "4.5", "3")], 18)
    assert [(int(r["side"]), int(r["price"])) for r in records] == [(Side.BID, 4_500_000_000)]


# ---- CME MDP 3.0
CME = load_schema()
CME_TS = 1_795_876_200_000_000_000
_CME_PACKETS = [d.payload for d in generate(CME, packets=60).datagrams]


@FUZZ
@given(picks=st.lists(st.integers(0, len(_CME_PACKETS) - 1), min_size=1, max_size=6),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1 << 12), st.integers(0, 255)), max_size=10),
       cut=st.none() | st.integers(0, 300), mbo=st.booleans())
def test_cme_decoder_and_channel_survive_mutated_packets(picks, edits, cut, mbo):
    """Flipped bytes land in block lengths, group counts, template and schema ids, versions and
    every field: a packet is decoded or refused with a reason, and the channel never raises."""
    packets = [bytearray(_CME_PACKETS[i]) for i in picks]
    for which, pos, value in edits:
        packet = packets[which % len(packets)]
        packet[pos % len(packet)] = value
    if cut is not None:
        packets[-1] = packets[-1][:cut]
    decoded = Decoder(CME).decode([bytes(p) for p in packets])
    assert set(decoded.bad.tolist()) <= {0, *BAD_REASONS}
    channel = Channel(CME, lambda sid: sid % 5 + 1, mbo=mbo)
    channel.apply(decoded)
    out = channel.take(CME_TS)
    if out is not None:
        _accepted(out)


def _cme_trade_and_level(template: int, mantissa: int) -> np.ndarray | None:
    entry = {"MDEntryPx": mantissa, "MDEntrySize": 2, "SecurityID": 1001, "RptSeq": 1, "NumberOfOrders": 1,
             "AggressorSide": 1, "MDUpdateAction": 0, "MDEntryType": b"0", "MDPriceLevel": 1}
    names = {f.name for g in CME.template(template).groups for f in g.fields}
    message = encode_message(CME, template, {"TransactTime": CME_TS, "MatchEventIndicator": 0x80},
                             {"NoMDEntries": [{k: v for k, v in entry.items() if k in names}]})
    channel = Channel(CME, lambda sid: 1)
    channel.apply(Decoder(CME).decode([encode_packet(1, CME_TS, [message])]))
    return channel.take(CME_TS)


WRAPS_TO_5000 = 5 * 10**10 + 2**62
"""A legacy (exponent -7) price mantissa whose product by 100 wraps int64 to exactly 5000.0."""


@pytest.mark.parametrize("template", [42, 32])  # legacy trade summary and book
def test_cme_legacy_mantissa_past_the_fixed_point_is_not_wrapped(template):
    """It was published as a trade at 5000.0, and entered the book as a level at 5000.0."""
    out = _cme_trade_and_level(template, WRAPS_TO_5000)
    assert out is None or len(_accepted(out)) == 0
    good = _cme_trade_and_level(template, 5 * 10**10)
    assert _accepted(good)["price"].tolist() == [5_000 * NS]


def test_cme_legacy_snapshot_level_past_the_fixed_point_is_left_out():
    levels = [{"MDEntryPx": px, "MDEntrySize": 3, "NumberOfOrders": 1, "MDPriceLevel": level, "MDEntryType": b"0"}
              for level, px in ((1, 5 * 10**10), (2, WRAPS_TO_5000 - 10**8))]
    message = encode_message(CME, 38, {"SecurityID": 1001, "RptSeq": 9, "TransactTime": CME_TS, "TotNumReports": 1},
                             {"NoMDEntries": levels})
    decoded = Decoder(CME).decode([encode_packet(1, CME_TS, [message])])
    channel = Channel(CME, lambda sid: 1)
    channel.rebuild(1001, 9, decoded.group(38, "NoMDEntries")[1], channel.exponent[38], CME_TS)
    assert channel.levels(1001)[(int(Side.BID), False)] == [[5_000 * NS, 3]]


def _pcapng(resolution: int, ticks: int, frame: bytes, *, packet_block: bytes | None = None) -> bytes:
    def block(kind: int, body: bytes) -> bytes:
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    header = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    interface = block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, resolution) + bytes(4))
    packet = packet_block if packet_block is not None else block(
        6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame
        + bytes(-len(frame) % 4))
    return header + interface + packet


@pytest.fixture(scope="module")
def udp_frame(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("pcap") / "one.pcap"
    write_pcap(path, [Datagram(CME_TS, "224.0.31.1", 14310, b"payload!")])
    return path.read_bytes()[24 + 16:]


@pytest.mark.parametrize("resolution, ticks, ns", [
    (9, CME_TS, CME_TS), (6, CME_TS // 1000, CME_TS), (10, CME_TS * 10 + 7, CME_TS),  # 10**-10 s was a float
    (0x80 | 30, (CME_TS // NS) << 30 | 1 << 29, CME_TS + NS // 2),  # 2**-30 s: the time was 0 (int(1e9 / 2**30))
])
def test_pcapng_times_are_exact_nanoseconds(tmp_path, udp_frame, resolution, ticks, ns):
    path = tmp_path / "x.pcapng"
    path.write_bytes(_pcapng(resolution, ticks, udp_frame))
    (datagram,) = read_pcap(path)
    assert type(datagram.ts_ns) is int and datagram.ts_ns == ns and datagram.payload == b"payload!"


def test_a_pcapng_packet_block_too_short_for_its_fields_is_a_value_error(tmp_path, udp_frame):
    """It raised struct.error out of read_pcap (a traceback from `streamctl venue cme --pcap`)."""
    path = tmp_path / "short.pcapng"
    path.write_bytes(_pcapng(9, 0, udp_frame, packet_block=struct.pack("<III", 6, 12, 12)))
    with pytest.raises(ValueError, match="too short"):
        read_pcap(path)


@FUZZ
@given(kind=st.sampled_from(["pcap", "pcapng"]), resolution=st.integers(0, 255),
       edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8), cut=st.integers(0, 200))
def test_pcap_reader_survives_hostile_captures(tmp_path_factory, udp_frame, kind, resolution, edits, cut):
    data = bytearray(_pcapng(resolution, CME_TS, udp_frame) if kind == "pcapng" else
                     struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
                     + struct.pack("<IIII", 1, 2, len(udp_frame), len(udp_frame)) + udp_frame)
    for pos, value in edits:
        data[pos % len(data)] = value
    path = tmp_path_factory.mktemp("pcap") / "f"
    path.write_bytes(bytes(data[:len(data) - cut]))
    try:
        datagrams = read_pcap(path)
    except ValueError:
        return
    assert all(type(d.ts_ns) is int and 0 <= d.port < 65536 for d in datagrams)


# ---- Databento live: the DBN stream after authentication, against databento_dbn's reading
def _mostly(usual, odd):
    """`usual` three times in four, so a record is often whole but for one odd field."""
    return st.one_of(usual, usual, usual, odd)


_DBN_PRICES = _mostly(st.integers(1, 10**13), st.sampled_from([0, -1, 2**63 - 1, -(2**63), 10**18])
                      | st.integers(-(2**63), 2**63 - 1))
_DBN_SIZES = _mostly(st.integers(1, 1000), st.sampled_from([0, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1))
_DBN_TIMES = _mostly(st.integers(TS, TS + 10**12), st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1])
                     | st.integers(0, 2**64 - 1))
_DBN_RECORD = st.tuples(_mostly(st.sampled_from([0x00, 0x01]), st.sampled_from([0x20, 0x12, 0x15, 0x17])),
                        _DBN_PRICES, _DBN_SIZES, _DBN_TIMES, _DBN_TIMES, _mostly(st.sampled_from(b"AB"),
                                                                                 st.sampled_from(b"N?\x00")),
                        _mostly(st.just(ord("T")), st.sampled_from(b"FACMRN?")), st.integers(0, 255),
                        _DBN_PRICES, _DBN_PRICES, _DBN_SIZES, _DBN_SIZES)


@FUZZ
@given(records=st.lists(_DBN_RECORD, min_size=1, max_size=8), cut=st.none() | st.integers(1, 400))
def test_dbn_live_records_with_odd_values_agree_with_databento_dbn(records, cut):
    """Trades and MBP-1 with undefined prices, sizes and times, unknown sides and actions, and
    records of schemas no feed subscribed (OHLCV, status, error, system) with odd bytes: every
    record we let through carries what databento_dbn reads from the same bytes."""
    stream = encode_metadata(version=3, dataset="GLBX.MDP3", start=TS)
    stream += encode_symbol_mapping(version=3, instrument_id=7, ts_event=TS, stype_in_symbol="ESZ4",
                                    stype_out_symbol="ESZ4", start_ts=TS, end_ts=TS + 1)
    head = len(stream)
    for i, (rtype, px, sz, ts, ts_recv, side, action, flags, bid, ask, bid_sz, ask_sz) in enumerate(records):
        trade = struct.pack("<qIccBBQiI", px, sz, bytes([action]), bytes([side]), flags, 0, ts_recv, 0, i)
        if rtype in (0x00, 0x01):
            body = trade + (struct.pack("<qqIIII", bid, ask, bid_sz, ask_sz, 1, 1) if rtype == 0x01 else b"")
        else:  # the same bytes under another schema's header: odd OHLCV values, texts without a NUL
            body = trade + struct.pack("<qqIIII", bid, ask, bid_sz, ask_sz, 1, 1) + bytes(65 + i % 26 for i in range(240))
        stream += record_header(16 + len(body), rtype, instrument_id=7, ts_event=ts) + body
    if cut is not None:
        stream = stream[:max(head, len(stream) - cut)]
    ours = DbnDecoder()
    ours.write(stream)
    try:
        batches = [ours.decode(), ours.finish()]
    except DbnError:
        return
    kept = _accepted(np.concatenate([b.records for b in batches]))
    reference = dbn_ref.DBNDecoder()
    reference.write(stream)
    try:
        theirs = reference.decode()
    except ValueError:
        theirs = []
    sides = {"B": Side.BID, "A": Side.ASK, "N": Side.NONE}
    trades = {(r.ts_event, r.price, r.size, sides.get(str(getattr(r.side, "value", r.side)), -1)) for r in theirs
              if isinstance(r, (dbn_ref.TradeMsg, dbn_ref.MBP1Msg))}
    quotes = {(r.ts_event, r.levels[0].bid_px, r.levels[0].ask_px, r.levels[0].bid_sz, r.levels[0].ask_sz)
              for r in theirs if isinstance(r, dbn_ref.MBP1Msg)}
    for r in kept:
        if r["kind"] == Kind.TRADE:
            assert (int(r["ts_event"]), int(r["price"]), float(r["size"]), int(r["side"])) in trades
        else:
            assert r["kind"] == Kind.QUOTE
            assert (int(r["ts_event"]), int(r["price"]), int(r["price2"]), float(r["size"]), float(r["size2"])) in quotes
