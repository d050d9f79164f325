"""Alpaca's market-data stream messages as msgspec Structs, keeping the venue's field names.

Every server frame is an array of maps tagged by ``T``. The same Structs decode JSON (text
frames) and MessagePack (binary frames, what the official SDKs ask for); ``t`` is kept raw
because it carries nanoseconds in both (an RFC-3339 string, or a MessagePack Timestamp) and
`timestamp_ns` reads either without the microsecond loss of ``datetime``.
"""

from __future__ import annotations

import calendar
import struct
from typing import Literal

import msgspec

__all__ = [
    "Trade", "Quote", "Bar", "UpdatedBar", "DailyBar", "Correction", "CancelError", "Error", "Success",
    "Subscription", "DATA", "CONTROL", "Message", "Tagged", "Request", "timestamp_ns", "format_rfc3339",
    "msgpack_timestamp",
]

_TAG = {"tag_field": "T", "kw_only": True}


class Trade(msgspec.Struct, tag="t", **_TAG):  # type: ignore[call-arg]
    S: str
    p: float
    s: float
    t: msgspec.Raw
    i: int = 0
    x: str = ""
    c: list[str] = []
    z: str = ""
    tks: str = ""
    """Crypto only: taker side, ``B`` (buyer) or ``S`` (seller)."""


class Quote(msgspec.Struct, tag="q", **_TAG):  # type: ignore[call-arg]
    S: str
    bp: float
    bs: float
    ap: float
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
    oi: int
    op: float
    os: float
    ci: int
    cp: float
    cs: float
    t: msgspec.Raw
    x: str = ""
    oc: list[str] = []
    cc: list[str] = []
    z: str = ""


class CancelError(msgspec.Struct, tag="x", **_TAG):  # type: ignore[call-arg]
    """Trade `i` is void: ``a`` = ``C`` cancelled, ``E`` reported in error."""

    S: str
    i: int
    p: float
    s: float
    a: str
    t: msgspec.Raw
    x: str = ""
    z: str = ""


class Error(msgspec.Struct, tag="error", **_TAG):  # type: ignore[call-arg]
    code: int
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


def timestamp_ns(raw: msgspec.Raw) -> int:
    """Nanoseconds since the epoch of a raw ``t``: a JSON RFC-3339 string or a MessagePack
    Timestamp (ext -1, 32/64/96-bit). Raises ValueError on anything else."""
    b = bytes(raw)
    if not b:
        raise ValueError("empty timestamp")
    head = b[0]
    if head == 0x22:  # a JSON string
        return _parse_rfc3339(b[1:-1].decode("ascii"))
    if head == 0xD6 and len(b) == 6 and b[1] == 0xFF:
        return struct.unpack(">I", b[2:])[0] * _NS
    if head == 0xD7 and len(b) == 10 and b[1] == 0xFF:
        value = struct.unpack(">Q", b[2:])[0]
        return (value & 0x3_FFFF_FFFF) * _NS + (value >> 34)
    if head == 0xC7 and len(b) == 15 and b[1] == 12 and b[2] == 0xFF:
        nanos, seconds = struct.unpack(">Iq", b[3:])
        return seconds * _NS + nanos
    if 0xA0 <= head <= 0xBF or head in (0xD9, 0xDA):  # a MessagePack string
        skip = 1 if head < 0xC0 else (2 if head == 0xD9 else 3)
        return _parse_rfc3339(b[skip:].decode("ascii"))
    raise ValueError(f"not a timestamp: {b[:16]!r}")


def _parse_rfc3339(text: str) -> int:
    """``2021-02-22T15:51:44.208123456Z`` (or ``+00:00``) to ns; any number of fraction digits."""
    if len(text) < 20 or text[10] not in "Tt" or text[4] != "-" or text[7] != "-":
        raise ValueError(f"not an RFC-3339 time: {text!r}")
    seconds = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                               int(text[14:16]), int(text[17:19]), 0, 0, 0))
    rest = text[19:]
    nanos = 0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        digits = rest[1:end]
        if not digits or len(digits) > 9:
            raise ValueError(f"bad fraction of a second in {text!r}")
        nanos = int(digits.ljust(9, "0"))
        rest = rest[end:]
    if rest in ("Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(f"bad zone in {text!r}")
    return (seconds - offset) * _NS + nanos


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
