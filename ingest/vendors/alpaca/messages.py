"""Alpaca's market-data stream messages as msgspec Structs, keeping the venue's field names.

Every server frame is an array of maps tagged by ``T``. The same Structs decode JSON (text
frames) and MessagePack (binary frames, what the official SDKs ask for); ``t`` is kept raw
because it carries nanoseconds in both (an RFC-3339 string, or a MessagePack Timestamp) and
`timestamp_ns` reads either without the microsecond loss of ``datetime``.
"""

from __future__ import annotations

import calendar
import datetime
import re
import struct
from typing import Annotated, Literal

import msgspec

__all__ = [
    "Trade", "Quote", "Bar", "UpdatedBar", "DailyBar", "Correction", "CancelError", "Error", "Success",
    "Subscription", "DATA", "CONTROL", "Message", "Tagged", "Request", "timestamp_ns", "format_rfc3339",
    "msgpack_timestamp",
]

_TAG = {"tag_field": "T", "kw_only": True}

Price = Annotated[float, msgspec.Meta(ge=-9.2e9, le=9.2e9)]
"""A price the 1e-9 fixed point holds (int64: +-9.22e9); NaN, infinities and larger values are
refused by the decoder, so no conversion overflows."""
TradeId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A trade id: Alpaca's are int64 and never negative; a record's `sequence` (u64) or `price2`
(i64) holds any of them."""
Code = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
"""An error code: a 32-bit integer, so an event's `code` always encodes."""


class Trade(msgspec.Struct, tag="t", **_TAG):  # type: ignore[call-arg]
    S: str
    p: Price
    s: float
    t: msgspec.Raw
    i: TradeId = 0
    x: str = ""
    c: list[str] = []
    z: str = ""
    tks: str = ""
    """Crypto only: taker side, ``B`` (buyer) or ``S`` (seller)."""


class Quote(msgspec.Struct, tag="q", **_TAG):  # type: ignore[call-arg]
    S: str
    bp: Price
    bs: float
    ap: Price
    as_: float = msgspec.field(name="as")
    t: msgspec.Raw
    bx: str = ""
    ax: str = ""
    c: list[str] = []
    z: str = ""


class Bar(msgspec.Struct, tag="b", **_TAG):  # type: ignore[call-arg]
    S: str
    o: float
    h: float
    l: float  # noqa: E741 - Alpaca's name
    c: float
    v: float
    t: msgspec.Raw
    n: int = 0
    vw: float = 0.0


class UpdatedBar(Bar, tag="u"):  # type: ignore[call-arg]
    pass


class DailyBar(Bar, tag="d"):  # type: ignore[call-arg]
    pass


class Correction(msgspec.Struct, tag="c", **_TAG):  # type: ignore[call-arg]
    """Trade `oi` was wrong: it is now trade `ci` at `cp` x `cs`."""

    S: str
    oi: TradeId
    op: Price
    os: float
    ci: TradeId
    cp: Price
    cs: float
    t: msgspec.Raw
    x: str = ""
    oc: list[str] = []
    cc: list[str] = []
    z: str = ""


class CancelError(msgspec.Struct, tag="x", **_TAG):  # type: ignore[call-arg]
    """Trade `i` is void: ``a`` = ``C`` cancelled, ``E`` reported in error."""

    S: str
    i: TradeId
    p: Price
    s: float
    a: str
    t: msgspec.Raw
    x: str = ""
    z: str = ""


class Error(msgspec.Struct, tag="error", **_TAG):  # type: ignore[call-arg]
    code: Code
    msg: str = ""


class Success(msgspec.Struct, tag="success", **_TAG):  # type: ignore[call-arg]
    msg: str


class Subscription(msgspec.Struct, tag="subscription", **_TAG):  # type: ignore[call-arg]
    trades: list[str] = []
    quotes: list[str] = []
    bars: list[str] = []
    updatedBars: list[str] = []  # noqa: N815 - Alpaca's names
    dailyBars: list[str] = []  # noqa: N815
    statuses: list[str] = []
    lulds: list[str] = []
    corrections: list[str] = []
    cancelErrors: list[str] = []  # noqa: N815
    orderbooks: list[str] = []


DATA = (Trade, Quote, Bar, UpdatedBar, DailyBar, Correction, CancelError)
CONTROL = (Error, Success, Subscription)
Message = Trade | Quote | Bar | UpdatedBar | DailyBar | Correction | CancelError | Error | Success | Subscription


class Tagged(msgspec.Struct):
    """Just the tag of a message, to name what could not be decoded."""

    T: str = ""


class Request(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A client message: ``auth`` (key, secret) or ``subscribe``/``unsubscribe`` (channels)."""

    action: Literal["auth", "subscribe", "unsubscribe"]
    key: str | None = None
    secret: str | None = None
    trades: list[str] | None = None
    quotes: list[str] | None = None
    bars: list[str] | None = None
    updatedBars: list[str] | None = None  # noqa: N815
    dailyBars: list[str] | None = None  # noqa: N815
    statuses: list[str] | None = None
    lulds: list[str] | None = None
    corrections: list[str] | None = None
    cancelErrors: list[str] | None = None  # noqa: N815
    orderbooks: list[str] | None = None

    def __repr__(self) -> str:  # the secret never reaches a log
        return f"Request(action={self.action!r})"


_NS = 1_000_000_000


_INT64 = 2**63


def timestamp_ns(raw: msgspec.Raw) -> int:
    """Nanoseconds since the epoch of a raw ``t``: a JSON RFC-3339 string or a MessagePack
    Timestamp (ext -1, 32/64/96-bit). Raises ValueError on anything else, on nanoseconds of
    1e9 or more, and on a time int64 nanoseconds cannot hold (it would wrap to a plausible one)."""
    b = bytes(raw)
    if not b:
        raise ValueError("empty timestamp")
    head = b[0]
    if head == 0x22:  # a JSON string
        ns = _parse_rfc3339(b[1:-1].decode("ascii"))
    elif head == 0xD6 and len(b) == 6 and b[1] == 0xFF:
        ns = struct.unpack(">I", b[2:])[0] * _NS
    elif head == 0xD7 and len(b) == 10 and b[1] == 0xFF:
        value = struct.unpack(">Q", b[2:])[0]
        ns = _join(value & 0x3_FFFF_FFFF, value >> 34)
    elif head == 0xC7 and len(b) == 15 and b[1] == 12 and b[2] == 0xFF:
        nanos, seconds = struct.unpack(">Iq", b[3:])
        ns = _join(seconds, nanos)
    elif 0xA0 <= head <= 0xBF or head in (0xD9, 0xDA):  # a MessagePack string
        skip = 1 if head < 0xC0 else (2 if head == 0xD9 else 3)
        ns = _parse_rfc3339(b[skip:].decode("ascii"))
    else:
        raise ValueError(f"not a timestamp: {b[:16]!r}")
    if not -_INT64 <= ns < _INT64:
        raise ValueError(f"a timestamp beyond int64 nanoseconds: {b[:16]!r}")
    return ns


def _join(seconds: int, nanos: int) -> int:
    if nanos >= _NS:
        raise ValueError(f"a MessagePack Timestamp with {nanos} nanoseconds (must be below 1e9)")
    return seconds * _NS + nanos


_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))")


def _parse_rfc3339(text: str) -> int:
    """``2021-02-22T15:51:44.208123456Z`` (or ``+00:00``) to ns; up to 9 fraction digits. Every
    field is checked (day 45 or hour 99 would otherwise roll into another, plausible, time); a
    leap second (``:60``) is the second after ``:59``."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC-3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, zone_h, zone_m = match.group(7, 9, 10, 11)
    if hour > 23 or minute > 59 or second > 60 or int(zone_h or 0) > 23 or int(zone_m or 0) > 59:
        raise ValueError(f"a field out of range in {text!r}")
    try:
        datetime.date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"{exc} in {text!r}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if sign:
        seconds -= (int(zone_h) * 3600 + int(zone_m) * 60) * (1 if sign == "+" else -1)
    return seconds * _NS + (int(fraction.ljust(9, "0")) if fraction else 0)


def format_rfc3339(ns: int) -> str:
    """ns since the epoch as Alpaca writes ``t`` in JSON: UTC, nanoseconds, ``Z``."""
    seconds, nanos = divmod(ns, _NS)
    y, mo, d, h, mi, s = _gmtime(seconds)
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{nanos:09d}Z"


def _gmtime(seconds: int) -> tuple[int, int, int, int, int, int]:
    import time

    t = time.gmtime(seconds)
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec


def msgpack_timestamp(ns: int) -> msgspec.msgpack.Ext:
    """ns since the epoch as a MessagePack Timestamp (ext -1, 96-bit: nanoseconds kept)."""
    seconds, nanos = divmod(ns, _NS)
    return msgspec.msgpack.Ext(-1, struct.pack(">Iq", nanos, seconds))
