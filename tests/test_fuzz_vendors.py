"""Hostile and merely unusual input thrown at the vendors' parsers and the hub's recovery service.

Each surface may refuse its input only with its own documented error (counted and skipped, see
docs/failures.md); any other exception, a hang (bounded by pytest-timeout), or a record the
validation screen accepts with a value other than what the vendor sent, is a failure. Values are
checked against an independent reading where one exists (msgpack-python's Timestamp, Python's
datetime). Example counts are fixed and the database is off, so a CI run is bounded and repeatable.
"""

from __future__ import annotations

import calendar
import datetime
import json

import msgpack
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.ingest.validation import refusals
from streamctl.ingest.vendors.alpaca import messages as am
from streamctl.ingest.vendors.alpaca.parsing import FrameDecoder
from streamctl.shm.records import RECORD_DTYPE

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
