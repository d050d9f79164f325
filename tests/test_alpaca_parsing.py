"""Alpaca frames to records: timestamps to the nanosecond in every encoding Alpaca may use, and
no frame, however broken, raises or passes silently."""

from __future__ import annotations

import json

import msgpack
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.ingest.vendors.alpaca import messages as m
from streamctl.ingest.vendors.alpaca.parsing import FrameDecoder
from streamctl.shm.records import Kind

NS = 1_719_878_281_218_218_853  # 2024-07-01T23:58:01.218218853Z


def _raw(value, encoding: str) -> msgspec.Raw:
    blob = msgpack.packb(value) if encoding == "msgpack" else json.dumps(value).encode()
    return (msgspec.msgpack if encoding == "msgpack" else msgspec.json).decode(blob, type=msgspec.Raw)


@pytest.mark.parametrize("value, encoding, expected", [
    (msgpack.Timestamp(1_719_878_281, 0), "msgpack", 1_719_878_281_000_000_000),  # 32-bit form
    (msgpack.Timestamp(1_719_878_281, 218_218_853), "msgpack", NS),  # 64-bit form
    (msgpack.Timestamp(-1, 5), "msgpack", -999_999_995),  # 96-bit form (before 1970)
    ("2024-07-01T23:58:01.218218853Z", "json", NS),
    ("2024-07-01T23:58:01.218Z", "json", 1_719_878_281_218_000_000),
    ("2024-07-01T23:58:01Z", "json", 1_719_878_281_000_000_000),
    ("2024-07-01T19:58:01.218218853-04:00", "json", NS),
    ("2024-07-01T23:58:01.218218853Z", "msgpack", NS),  # a string inside MessagePack
])
def test_timestamps_keep_nanoseconds(value, encoding, expected):
    assert m.timestamp_ns(_raw(value, encoding)) == expected


def test_our_encoders_round_trip():
    assert m.timestamp_ns(_raw(m.format_rfc3339(NS), "json")) == NS
    packed = msgspec.msgpack.encode(m.msgpack_timestamp(NS))
    assert m.timestamp_ns(msgspec.msgpack.decode(packed, type=msgspec.Raw)) == NS
    assert msgpack.unpackb(packed).to_unix_nano() == NS  # what alpaca-py reads


@pytest.mark.parametrize("bad", ["2024-07-01 23:58:01Z", "2024-07-01T23:58:01.1234567890Z", "yesterday", 17])
def test_bad_timestamps_are_refused(bad):
    with pytest.raises(ValueError):
        m.timestamp_ns(_raw(bad, "json"))


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_a_frame_keeps_message_order_across_types(encoding):
    frame = [
        {"T": "q", "S": "AAPL", "bp": 1.5, "bs": 2, "ap": 1.75, "as": 3, "t": "2024-07-01T23:58:01.000000001Z"},
        {"T": "t", "S": "MSFT", "p": 2.25, "s": 4, "i": 9, "t": "2024-07-01T23:58:01.000000002Z"},
        {"T": "b", "S": "AAPL", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": "2024-07-01T23:58:00Z"},
        {"T": "x", "S": "MSFT", "i": 9, "p": 2.25, "s": 4, "a": "C", "t": "2024-07-01T23:58:01.000000002Z"},
        {"T": "t", "S": "AAPL", "p": 1.5, "s": 0.5, "i": 10, "tks": "S", "t": "2024-07-01T23:58:01.000000003Z"},
        {"T": "subscription", "trades": ["AAPL"]},
    ]
    blob = msgpack.packb(frame) if encoding == "msgpack" else json.dumps(frame)
    ids = {"AAPL": 1, "MSFT": 2}
    out = FrameDecoder(encoding, ids.__getitem__).decode(blob, 42)
    r = out.records
    assert r["kind"].tolist() == [Kind.QUOTE, Kind.TRADE, Kind.CANCEL, Kind.TRADE]
    assert r["instrument_id"].tolist() == [1, 2, 2, 1] and (r["ts_recv"] == 42).all()
    assert r["ts_event"].tolist() == [1_719_878_281_000_000_001, 1_719_878_281_000_000_002,
                                      1_719_878_281_000_000_002, 1_719_878_281_000_000_003]
    assert r["price"].tolist() == [1_500_000_000, 2_250_000_000, 2_250_000_000, 1_500_000_000]
    assert r["price2"][0] == 1_750_000_000 and r["size2"][0] == 3.0 and r["sequence"][1] == 9
    assert r["side"].tolist() == [0, 0, 0, 2]  # the crypto taker side of the last trade
    assert out.skipped == {"b": 1} and [type(c) for c in out.control] == [m.Subscription] and not out.malformed


def test_a_bad_message_costs_only_itself():
    frame = [{"T": "t", "S": "A", "p": 1.0, "s": 1, "t": "2024-07-01T23:58:01Z"},
             {"T": "t", "S": "A", "p": "x", "s": 1, "t": "2024-07-01T23:58:01Z"},
             {"T": "t", "S": "A", "p": 1.0, "s": 1, "t": "not a time"},
             {"T": "zz"}, {"no tag": 1},
             {"T": "q", "S": "", "bp": 1, "bs": 1, "ap": 1, "as": 1, "t": "2024-07-01T23:58:01Z"}]
    out = FrameDecoder("json", lambda s: 0 if not s else 1).decode(json.dumps(frame), 0)
    assert len(out.records) == 1 and out.malformed == 4 and out.skipped == {"zz": 1}


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(blob=st.binary(max_size=300), encoding=st.sampled_from(["msgpack", "json"]))
def test_arbitrary_bytes_never_raise(blob, encoding):
    out = FrameDecoder(encoding, lambda s: 1).decode(blob, 0)
    assert len(out.records) == 0 or out.records.dtype.names is not None
    assert out.malformed >= 0


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=8))
_MESSAGES = st.dictionaries(st.sampled_from(["T", "S", "p", "s", "t", "i", "bp", "bs", "ap", "as", "oi", "ci", "cp",
                                             "cs", "os", "a", "code", "msg"]), _SCALARS, max_size=10)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(frame=st.lists(_MESSAGES, max_size=6))
def test_arbitrary_messages_are_decoded_counted_or_skipped(frame):
    out = FrameDecoder("msgpack", lambda s: 1).decode(msgpack.packb(frame), 0)
    handled = len(out.records) + len(out.control) + out.malformed + sum(out.skipped.values())
    assert handled == len(frame)
    assert np.isin(out.records["kind"], [Kind.TRADE, Kind.QUOTE, Kind.CORRECTION, Kind.CANCEL]).all()


def _ext(nanos: int, seconds: int) -> msgspec.msgpack.Ext:
    return msgspec.msgpack.Ext(-1, nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True))


_GOOD = {"T": "t", "S": "A", "p": 1.0, "s": 1.0, "t": m.msgpack_timestamp(NS)}
_WRAPS = (2**64 + NS) // 1_000_000_000  # seconds whose nanoseconds wrap int64 to about NS


@pytest.mark.parametrize("change", [
    {"p": float("inf")}, {"p": float("nan")}, {"p": 1e10}, {"p": 2**64 - 1},  # conversions that overflowed
    {"i": -1}, {"i": 2**64 - 1},  # ids no record field holds: OverflowError
    {"T": "c", "oi": 1, "op": 1.0, "os": 1.0, "ci": 2, "cp": float("inf"), "cs": 1.0},  # round(inf) raised
    {"T": "c", "oi": -1, "op": 1.0, "os": 1.0, "ci": 2**64 - 1, "cp": 1.0, "cs": 1.0},
    {"T": "x", "i": -5, "a": "C"},
    {"t": _ext(0, _WRAPS)},  # wrapped to a plausible time, published
    {"t": _ext(4_000_000_000, 1_700_000_000)},  # nanoseconds past 1e9, rolled into the next seconds
    {"t": msgspec.msgpack.Ext(-1, (2**64 - 1).to_bytes(8, "big"))},  # 64-bit form past int64: OverflowError
    {"t": "1000-01-01T00:00:00Z"},  # numpy wrapped it to 2169
    {"t": "2021Z"}, {"t": "2024-07-01 23:58:01Z"}, {"t": "2024-07-01T23:58:01.1234567891Z"},  # numpy read them
    {"t": "2024-02-45T99:99:99Z"}, {"t": "2024-07-01T23:58:01+99:99"},  # rolled into another day
    {"t": "\u0662024-07-01T23:58:01Z"},  # int() reads other scripts' digits
])
def test_odd_values_are_malformed_not_raised_nor_wrapped(change):
    """Each of these raised out of `decode` or published a record with another value than sent."""
    message = {**_GOOD, **change}
    if message["T"] == "c":
        message.pop("p"), message.pop("s")
    for encoding in ("msgpack", "json"):
        if encoding == "json" and (isinstance(message["t"], msgspec.msgpack.Ext)
                                   or not all(np.isfinite(v) for v in message.values() if isinstance(v, float))):
            continue
        lib = msgspec.msgpack if encoding == "msgpack" else msgspec.json
        good = _GOOD if encoding == "msgpack" else {**_GOOD, "t": m.format_rfc3339(NS)}
        out = FrameDecoder(encoding, lambda s: 1).decode(lib.encode([message, good]), 42)
        assert out.malformed == 1, (encoding, out.first_problem)
        assert out.records["ts_event"].tolist() == [NS] and out.records["price"].tolist() == [1_000_000_000]


def test_an_error_code_past_32_bits_is_malformed():
    """It used to reach the `error` event, whose MessagePack encoding then raised in the feed."""
    out = FrameDecoder("json", lambda s: 1).decode(b'[{"T":"error","code":1180591620717411303424,"msg":"x"}]', 0)
    assert out.malformed == 1 and not out.control


def test_a_leap_second_is_the_next_second():
    leap = m.timestamp_ns(_raw("2016-12-31T23:59:60.5Z", "json"))
    assert leap == m.timestamp_ns(_raw("2017-01-01T00:00:00.5Z", "json"))
