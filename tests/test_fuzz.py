"""Random and mutated bytes thrown at every parser: DBN, CSV, Parquet, the Databento control
protocol, the plant config and the client's decoder (over a real ZeroMQ socket).

Each parser may refuse its input only with its own documented error (`DbnError`, `TabularError`,
`ControlError`, `ConfigError`, or a `DecodeError` reported to the client's ``on_error``); any
other exception, a hang (bounded by pytest-timeout) or a record with an impossible value is a
failure. Example counts are fixed and the database is off, so a CI run is bounded and repeatable.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import zmq
from _data import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.cli.config import ConfigError, parse_config
from streamctl.client import DecodeError, Subscriber
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError
from streamctl.ingest.formats.dbn.encoder import encode_metadata, encode_symbol_mapping, record_header
from streamctl.ingest.formats.tabular import TabularError, iter_tabular
from streamctl.ingest.vendors.databento import protocol
from streamctl.shm.records import RECORD_DTYPE

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TS = 1_700_000_000_000_000_000


def _dbn_stream(version: int = 3) -> bytes:
    """A small valid live-style stream: metadata, a symbol mapping, trades, mbp-1 and MBO."""
    stream = encode_metadata(version=version, dataset="GLBX.MDP3", start=TS)
    stream += encode_symbol_mapping(version=version, instrument_id=7, ts_event=TS, stype_in_symbol="ESZ4",
                                    stype_out_symbol="ESZ4", start_ts=TS, end_ts=TS + 1)
    for i in range(4):
        trade = struct.pack("<qIccBBQiI", (5000 + i) * 10**9, 1 + i, b"T", b"AB"[i % 2:i % 2 + 1], 0x80, 0,
                            TS + i, 0, i)
        stream += record_header(48, 0x00, instrument_id=7, ts_event=TS + i) + trade
        stream += record_header(80, 0x01, instrument_id=7, ts_event=TS + i) + trade + struct.pack(
            "<qqIIII", (4999 + i) * 10**9, (5001 + i) * 10**9, 3, 4, 1, 1)
    for action, order in ((b"A", 1), (b"A", 2), (b"M", 1), (b"C", 2), (b"T", 0), (b"R", 0)):
        mbo = struct.pack("<QqIBBccQiI", order, 5000 * 10**9, 2, 0x80, 0, action, b"B", TS, 0, 9)
        stream += record_header(56, 0xA0, instrument_id=7, ts_event=TS) + mbo
    return stream


def _real(name: str) -> bytes:
    """A real sample, decompressed (the decoder's input on the wire is plain DBN)."""
    import zstandard

    raw = DATA.joinpath(name).read_bytes()
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw) if name.endswith(".zst") else raw


SEEDS = [_dbn_stream(3), _dbn_stream(2), _real("databento-dbn/test_data.mbo.v3.dbn"),
         _real("databento-dbn/test_data.trades.dbn"), _real("databento-python/LIVE/test_data.live.dbn.zst"),
         _real("nautilus_trader/historical_bars_catalog/futures_definition.dbn.zst")]
"""Generated streams plus real ones (v1 to v3, live gateway output with mixed schemas)."""


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut]) if cut is not None else bytes(buf)


def _check_records(records: np.ndarray) -> None:
    assert records.dtype == RECORD_DTYPE


@FUZZ
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                                   max_size=12),
       cut=st.none() | st.integers(0, 2000), split=st.integers(1, 97))
def test_dbn_decoder_survives_mutated_streams(seed, edits, cut, split):
    data = _mutate(seed, edits, cut)
    decoder = DbnDecoder()
    try:
        for start in range(0, len(data), split):  # arbitrary chunking, as a socket delivers it
            decoder.write(data[start:start + split])
            _check_records(decoder.decode().records)
    except DbnError:
        pass


@FUZZ
@given(data=st.binary(max_size=600))
def test_dbn_decoder_survives_random_bytes(data):
    decoder = DbnDecoder()
    try:
        decoder.write(b"DBN\x03" + data)
        _check_records(decoder.decode().records)
    except DbnError:
        pass


_CSV_CELLS = st.sampled_from(["", "1", "-5", "0", "1e20", "nan", "inf", "-inf", "AAPL", "B", "sell", "x",
                              "2024-07-01T23:58:01Z", "1700000000000000000", "-1", "3.5", "\u00e9", "\x00",
                              "\"", "1,2", " 7 "])


@FUZZ
@given(header=st.lists(st.sampled_from(["ts_event", "symbol", "price", "size", "side", "kind", "bid", "ask",
                                        "bid_size", "ask_size", "ts_recv", "sequence", "junk"]),
                       min_size=1, max_size=8),
       rows=st.lists(st.lists(_CSV_CELLS, min_size=0, max_size=9), max_size=12),
       raw=st.none() | st.binary(max_size=300))
def test_csv_reader_survives_hostile_files(tmp_path_factory, header, rows, raw):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    try:
        for batch in iter_tabular(str(path), format="csv", chunk_rows=5):
            _check_records(batch.records)
    except TabularError:
        pass


@FUZZ
@given(data=st.binary(max_size=400))
def test_parquet_reader_survives_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("pq") / "f.parquet"
    path.write_bytes(b"PAR1" + data + b"PAR1" if data[:1] == b"\x00" else data)
    try:
        for batch in iter_tabular(str(path), format="parquet"):
            _check_records(batch.records)
    except TabularError:
        pass


_LINE_KINDS = [protocol.Greeting, protocol.Challenge, protocol.AuthRequest, protocol.AuthResponse,
               protocol.SubscriptionRequest, protocol.SessionStart]


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       kind=st.sampled_from(_LINE_KINDS), chunk=st.integers(1, 50))
def test_control_protocol_survives_hostile_lines(data, kind, chunk):
    lines = protocol.LineBuffer()
    try:
        for start in range(0, len(data), chunk):
            lines.feed(data[start:start + chunk])
            while (line := lines.next_line()) is not None:
                try:
                    protocol.decode_line(line, kind)
                except protocol.ControlError:
                    pass
    except protocol.ControlError:
        pass


_YAML_PIECES = st.sampled_from([
    "name: x\n", "feeds:\n", "  - {name: a, vendor: sim, symbols: [A]}\n", "  - name: b\n", "    vendor: replay\n",
    "partitions: {count: 2}\n", "calculators:\n", "  bars: {time: [1s, 0]}\n", "rings: {capacity: 100}\n",
    "publish: {endpoint: 'tcp://127.0.0.1:0'}\n", "a: &a [1, 2]\n", "b: *a\n", "c: *zz\n", "- x\n", ": :\n",
    "\t\n", "'unclosed\n", "${NOPE}\n", "key: ${NOPE}\n", "!!python/object:os.system ls\n", "\x00", "{", "]"])


@FUZZ
@given(pieces=st.lists(_YAML_PIECES, max_size=10), noise=st.text(max_size=40))
def test_config_parser_refuses_only_with_config_errors(pieces, noise):
    try:
        parse_config("".join(pieces) + noise, environ={})
    except ConfigError as exc:
        assert "\n" not in str(exc)  # one line, always


@pytest.fixture(scope="module")
def hostile_publisher():
    """A bound PUB socket and a Subscriber connected to it (slow-joiner handled by a probe)."""
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    sub.subscribe("")
    errors: list[DecodeError] = []
    seen: list[str] = []
    sub.on_error(lambda e: errors.append(e) if isinstance(e, DecodeError) else None)
    sub.on_message(lambda topic, payload: seen.append(topic))
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:  # an undecodable probe proves the subscription is live
        pub.send_multipart([b"probe\x00", b""])
        sub.poll(0.05)
    assert errors, "the subscriber never received the probe"
    yield pub, sub, errors, seen
    sub.close()
    pub.close(0)


_TOPICS = st.sampled_from([b"bar.60s.AAPL\x00", b"trade.AAPL\x00", b"book.ESZ4\x00", b"event.feed\x00",
                           b"status.w\x00", b"nope.X\x00", b"bar.60s.AAPL", b"\xff\xfe\x00", b""])


def test_client_decoder_survives_hostile_messages(hostile_publisher):
    pub, sub, errors, seen = hostile_publisher

    @FUZZ
    @given(frames=st.lists(st.tuples(_TOPICS, st.binary(max_size=120)), min_size=1, max_size=5),
           extra=st.booleans())
    def run(frames, extra):
        before = len(errors)
        for topic, payload in frames:
            pub.send_multipart([topic, payload, b"x"] if extra else [topic, payload])
        sentinel = b"\x81\xa1z\xc0"  # a valid msgpack map the decoder refuses: counted as a DecodeError
        pub.send_multipart([b"event.sentinel\x00", sentinel])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.topic == "event.sentinel" for e in errors[before:]):
            sub.poll(0.02)
        assert any(e.topic == "event.sentinel" for e in errors[before:]), "the subscriber stopped answering"

    run()
    assert sub.decode_errors >= len(errors) > 0


def test_seed_streams_are_valid():
    """The mutation seeds are themselves decodable, so mutations start from real structure."""
    for seed in SEEDS:
        decoder = DbnDecoder()
        decoder.write(seed)
        batch = decoder.decode()
        assert batch.records.dtype == RECORD_DTYPE and decoder.metadata is not None

