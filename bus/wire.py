"""The wire contract: topic grammar and payload schemas, shared by publisher and client.

This module is the one place that knows the topic grammar. A message on the public
endpoint is two ZeroMQ frames:

1. the topic frame: the ASCII topic followed by one NUL byte, e.g. ``b"bar.60s.AAPL\\x00"``.
   ZeroMQ subscriptions match byte prefixes, so subscribing to ``b"bar.60s.AAPL\\x00"``
   gets exactly AAPL (never AAPLX), and ``b"bar.60s."`` gets every 60 s bar;
2. the payload: a MessagePack map with named fields (a MessagePack *array of maps* for the
   high-rate raw ``trade`` and ``quote`` topics, which are batched per topic).

Every payload carries ``seq``, a sequence number per (publisher, topic) starting at 1, and
``src``, the publisher's name, so a subscriber detects loss per topic, and a restarted
publisher (seq back to 1) is not mistaken for loss. `docs/wire.md` is the reference.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple

import msgspec

__all__ = [
    "TOPIC_TERMINATOR",
    "SYNC_SUBSCRIPTION",
    "PARAM_KINDS",
    "KINDS",
    "Topic",
    "topic",
    "topic_frame",
    "subscription_prefix",
    "parse_topic",
    "frame_text",
    "EventKind",
    "Bar",
    "Trade",
    "Quote",
    "Vwap",
    "Indicator",
    "Anomaly",
    "Book",
    "Event",
    "Status",
    "PAYLOAD_TYPES",
    "BATCHED_KINDS",
]

TOPIC_TERMINATOR = b"\x00"

SYNC_SUBSCRIPTION = b"\xffstreamctl-sync"
"""The hub's own subscription, sent to each publisher after the subscribers' (ZeroMQ sends them
in byte order, and topics are ASCII); no topic matches it. See `Publisher.wait_subscribed`."""

PARAM_KINDS = frozenset({"bar", "sma", "ema"})
"""Kinds whose topic has a parameter: ``bar.60s.AAPL``, ``sma.20.AAPL``, ``ema.12.AAPL``."""

SYMBOL_KINDS = frozenset({"bar", "sma", "ema", "vwap", "anomaly", "trade", "quote", "book"})
KINDS = SYMBOL_KINDS | {"status", "event"}
BATCHED_KINDS = frozenset({"trade", "quote"})
"""Kinds whose payload is an array of maps (batched per topic) instead of a single map."""


def topic(kind: str, name: str, param: str | int | None = None) -> str:
    """Build a topic string: ``kind.[param.]NAME`` (NAME is a symbol, process or source)."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(sorted(KINDS))}; was {kind!r}")
    if (param is None) == (kind in PARAM_KINDS):
        raise ValueError(f"`param` is {'required' if kind in PARAM_KINDS else 'not allowed'} for kind {kind!r}")
    text = f"{kind}.{name}" if param is None else f"{kind}.{param}.{name}"
    parse_topic(text)  # the one check of the grammar
    return text


def topic_frame(text: str) -> bytes:
    """The first ZeroMQ frame for a topic string."""
    return text.encode("ascii") + TOPIC_TERMINATOR


def subscription_prefix(pattern: str) -> bytes:
    """The ZeroMQ subscription for a user pattern.

    A pattern ending in ``.`` or ``*`` (or an empty one) is a prefix: ``bar.60s.`` and
    ``bar.60s.*`` both mean every 60 s bar. Anything else is an exact topic, so
    ``trade.AAPL`` never delivers ``trade.AAPLX``.
    """
    if pattern.endswith("*"):
        return pattern[:-1].encode("ascii")
    if pattern == "" or pattern.endswith("."):
        return pattern.encode("ascii")
    return topic_frame(pattern)


class Topic(NamedTuple):
    """A topic split into its parts: ``bar.60s.BRK.B`` is ``Topic("bar", "60s", "BRK.B")``."""

    kind: str
    param: str | None
    """The parameter of `PARAM_KINDS` (``60s``, ``20``); None for other kinds."""
    name: str
    """Symbol, process or source; may itself contain dots."""


def parse_topic(text: str) -> Topic:
    """Split a topic string into its parts, refusing one outside the grammar.

    Symbols may contain dots (``BRK.B``): only the kind, and the parameter for kinds that
    have one, are split off the front. Raises ValueError naming the topic.
    """
    if not text.isascii() or "\x00" in text:
        raise ValueError(f"topic must be ASCII without NUL; was {text!r}")
    kind, _, name = text.partition(".")
    if kind not in KINDS:
        raise ValueError(f"topic `{text}` has an unknown kind `{kind}`; known kinds: {', '.join(sorted(KINDS))}")
    param = None
    if kind in PARAM_KINDS:
        param, _, name = name.partition(".")
    if not name or param == "":
        raise ValueError(f"topic `{text}` does not follow `kind.[param.]NAME`")
    return Topic(kind, param, name)


def frame_text(frame: bytes) -> str:
    """The topic string of a received topic frame; ValueError if the frame is not one."""
    if not frame.endswith(TOPIC_TERMINATOR):
        raise ValueError("topic frame does not end with NUL")
    try:
        return frame[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("topic is not ASCII") from None


class EventKind(StrEnum):
    """What an ``event.*`` message says happened (its ``kind`` field).

    A StrEnum, so the wire carries the plain string; `Event.kind` stays a ``str`` so that a
    subscriber never refuses a kind newer than itself.
    """

    CONNECTED = "connected"
    """A live feed session is up (vendor session)."""
    DISCONNECT = "disconnect"
    """A live connection was lost; a reconnect is scheduled."""
    RECONNECT_FAILED = "reconnect_failed"
    """A connect attempt failed; another is scheduled."""
    RECONNECT = "reconnect"
    """A lost connection is back (counted in ``reconnects``)."""
    ERROR = "error"
    """Something failed: the vendor reported an error, or the feed gave up."""
    SYSTEM = "system"
    """A vendor's system message, passed on."""
    MALFORMED = "malformed"
    """Input that could not be parsed (counted in ``malformed``), logged once."""
    SKIPPED = "skipped"
    """Input the plant does not convert (a record type it ignores)."""
    GAP = "gap"
    """A vendor sequence gap (counted in ``gaps``)."""
    DONE = "done"
    """A feed's input ended, or a process finished cleanly."""
    FAILED = "failed"
    """A process gave up or died for good; it is not restarted."""
    RESTART = "restart"
    """The supervisor restarts a process that died."""
    STOPPED = "stopped"
    """A worker's last message: everything it published came before this."""
    PROBE = "probe"
    """A handshake message: a subscriber that sees it has its subscription in place."""

    @classmethod
    def _missing_(cls, value: object) -> EventKind:
        raise ValueError(f"`kind` must be one of {', '.join(cls)}; was {value!r}")


class _Payload(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Fields every payload carries."""

    seq: int = 0
    """Sequence number per (publisher, topic), from 1; filled in by the publisher."""
    src: str = ""
    """Name of the publishing process (``worker-0``, ``supervisor``...)."""


class Bar(_Payload, kw_only=True):
    """An OHLCV bar. ``interval``: ``"60s"`` (time), ``"100t"`` (tick), ``"5000v"`` (volume),
    ``"1000000d"`` (dollar). Time bars cover ``[ts_start, ts_end)`` in event time; other kinds
    carry the event times of their first and last trade."""

    symbol: str
    interval: str
    ts_start: int
    ts_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    vwap: float
    ts_event: int
    """Event time of the last trade in the bar."""
    ts_recv: int
    """Receive time of the last trade in the bar."""
    revision: int = 0
    """0 when first published; n for the n-th re-publication after a vendor corrected or
    cancelled one of its trades (time bars only; docs/wire.md, "Bar revisions")."""


class Trade(_Payload, kw_only=True):
    symbol: str
    ts_event: int
    ts_recv: int
    price: float
    size: float
    side: Literal["B", "S", "N"]
    """Aggressor: ``B`` buyer-initiated, ``S`` seller-initiated, ``N`` unknown."""


class Quote(_Payload, kw_only=True):
    symbol: str
    ts_event: int
    ts_recv: int
    bid: float | None
    ask: float | None
    bid_size: float
    ask_size: float


class Vwap(_Payload, kw_only=True):
    """Session-cumulative VWAP (reset at the configured session start) and rolling VWAP over
    the last ``window`` trades, as of the latest trade of a batch."""

    symbol: str
    ts_event: int
    ts_recv: int
    session_start: int
    session_vwap: float
    session_volume: float
    rolling_vwap: float
    window: int


class Indicator(_Payload, kw_only=True):
    """SMA or EMA of the trade price, as of the latest trade of a batch."""

    symbol: str
    name: Literal["sma", "ema"]
    window: int
    """SMA window or EMA span, in trades."""
    value: float
    ts_event: int
    ts_recv: int


class Anomaly(_Payload, kw_only=True):
    """A flagged tick. ``rule`` says what triggered it and ``detail`` says how."""

    symbol: str
    rule: Literal["zscore", "jump", "iqr", "crossed", "locked"]
    detail: str
    value: float
    """The measured quantity: z-score, jump in percent, IQRs beyond the quartile, or bid minus ask."""
    threshold: float
    price: float
    ts_event: int
    ts_recv: int


class Book(_Payload, kw_only=True):
    """Book state after a batch: up to ``depth`` levels each side as ``[price, size]``,
    best first."""

    symbol: str
    depth: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    ts_event: int
    ts_recv: int


class Event(_Payload, kw_only=True):
    """Something a process wants subscribers to know; ``kind`` is an `EventKind` value."""

    source: str
    kind: str
    message: str
    code: int | None = None
    ts: int


class Status(_Payload, kw_only=True):
    """Periodic health of one process, published by the supervisor on ``status.NAME``."""

    name: str
    role: str
    pid: int
    alive: bool
    restarts: int
    records_in: int
    records_out: int
    rate_in: float
    rate_out: float
    drops: dict[str, int]
    ts: int
    state: str = ""
    """starting, ready, reconnecting, stopping, exited (e.g. waiting for a restart) or failed."""
    cpu_pct: float = 0.0
    rss: int = 0
    detail: str = ""
    """Why it is in that state (e.g. ``restarted; last exit: killed by SIGKILL``)."""


PAYLOAD_TYPES: dict[str, type[_Payload]] = {
    "bar": Bar,
    "trade": Trade,
    "quote": Quote,
    "vwap": Vwap,
    "sma": Indicator,
    "ema": Indicator,
    "anomaly": Anomaly,
    "book": Book,
    "event": Event,
    "status": Status,
}
"""Topic kind -> payload type (for ``trade``/``quote`` the payload is a list of them)."""
