"""`streamctl tail`: print what a plant publishes, as readable rows or JSON lines.

With ``--json`` each line is one JSON object holding ``topic`` and every payload field; a
batched ``trade``/``quote`` message prints one line per item, so ``--count`` counts lines.
Patterns are checked against the topic grammar before anything connects (a misspelt kind would
otherwise print nothing, forever), and an endpoint nobody listens on is said once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from streamctl.bus.curve import CurveClient
from streamctl.bus.wire import KINDS, parse_topic

__all__ = ["tail_topics", "check_pattern", "to_row", "format_row"]

_WAIT_NOTICE = 0.5
"""Seconds without a connection before `tail` says it is waiting."""


def to_row(topic: str, payload: msgspec.Struct) -> dict[str, Any]:
    """``{"topic": ..., **fields}``: the JSON shape of `tail --json` and `replay --out`."""
    row = {"topic": topic}
    row.update(msgspec.to_builtins(payload))
    return row


def _ts(ns: int | None) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")


def format_row(row: dict[str, Any]) -> str:
    """One readable line per message."""
    topic = row["topic"]
    kind = parse_topic(topic).kind
    if kind == "bar":
        return (f"{topic:<22} {_ts(row['ts_start'])}  O {row['open']:.4f} H {row['high']:.4f} L {row['low']:.4f} "
                f"C {row['close']:.4f}  V {row['volume']:g}  n {row['trades']}  vwap {row['vwap']:.4f}")
    if kind == "trade":
        return f"{topic:<22} {_ts(row['ts_event'])}  {row['side']} {row['size']:g} @ {row['price']:.4f}"
    if kind == "quote":
        return (f"{topic:<22} {_ts(row['ts_event'])}  {row['bid_size']:g} x {row['bid']} / "
                f"{row['ask']} x {row['ask_size']:g}")
    if kind == "vwap":
        return (f"{topic:<22} {_ts(row['ts_event'])}  session {row['session_vwap']:.4f} "
                f"(vol {row['session_volume']:g})  rolling({row['window']}) {row['rolling_vwap']:.4f}")
    if kind in ("sma", "ema"):
        return f"{topic:<22} {_ts(row['ts_event'])}  {row['value']:.4f}"
    if kind == "anomaly":
        return f"{topic:<22} {_ts(row['ts_event'])}  {row['rule']}: {row['detail']}"
    if kind == "book":
        best_bid = row["bids"][0] if row["bids"] else None
        best_ask = row["asks"][0] if row["asks"] else None
        return f"{topic:<22} {_ts(row['ts_event'])}  bid {best_bid}  ask {best_ask}  depth {row['depth']}"
    if kind == "event":
        return f"{topic:<22} {_ts(row['ts'])}  {row['kind']}: {row['message']}"
    if kind == "status":
        return (f"{topic:<22} {_ts(row['ts'])}  {row['role']} pid {row['pid']} alive {row['alive']} "
                f"restarts {row['restarts']} in/s {row['rate_in']:g} drops {row['drops']}")
    return f"{topic:<22} {row}"


def check_pattern(pattern: str) -> None:
    """Refuse a `tail` pattern that can match no topic (ValueError naming it and the known kinds)."""
    if pattern in ("", "*"):
        return
    if not pattern.endswith((".", "*")):
        parse_topic(pattern)  # an exact topic: the grammar's one check
        return
    if not pattern.isascii() or "\x00" in pattern:
        raise ValueError(f"topic pattern must be ASCII without NUL; was {pattern!r}")
    kind, dot, _ = pattern.rstrip("*").partition(".")
    known = kind in KINDS if dot else any(name.startswith(kind) for name in KINDS)  # `ba*`: a kind's prefix
    if not known:
        raise ValueError(f"pattern `{pattern}` has an unknown kind `{kind}`; known kinds: {', '.join(sorted(KINDS))}")


def tail_topics(endpoint: str, patterns: list[str], *, as_json: bool, count: int | None, timeout: float | None,
                out: IO[str], err: IO[str], curve: CurveClient | None = None, since: datetime | None = None,
                last: bool = False, recovery: str | None = None) -> int:
    """Subscribe and print until `count` lines or `timeout` seconds; return lines printed.

    `since` / `last`: print first what the plant's recovery service holds (messages since then,
    or each topic's last message), then go on live (`Subscriber`'s ``since`` and ``last``).

    ValueError for a bad pattern or endpoint; TimeoutError when nothing ever answered at
    `endpoint` within `timeout` (after saying "waiting for ..." once on `err`).
    """
    from streamctl.client import Subscriber

    for pattern in patterns:
        check_pattern(pattern)
    printed = 0
    sub = Subscriber(endpoint, curve=curve, since=since, last=last, recovery=recovery or True)

    def on_message(topic: str, payload: Any) -> None:
        nonlocal printed
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            if count is not None and printed >= count:
                return
            row = to_row(topic, item)
            out.write((json.dumps(row) if as_json else format_row(row)) + "\n")
            printed += 1
        out.flush()

    sub.on_message(on_message)
    sub.subscribe(*patterns)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    ever_connected = said_waiting = False
    try:
        while count is None or printed < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            sub.poll(0.2 if left is None else min(left, 0.2))
            ever_connected = ever_connected or sub.connected
            if not (ever_connected or said_waiting) and time.monotonic() - start >= _WAIT_NOTICE:
                err.write(f"waiting for {endpoint} ...\n")
                err.flush()
                said_waiting = True
    finally:
        sub.close()
    if not (ever_connected or printed):  # history printed before any connection is an answer too
        raise TimeoutError(f"nothing answered at {endpoint} within {timeout:g} s")
    return printed
