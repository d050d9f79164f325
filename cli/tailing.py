"""`streamctl tail`: print what a plant publishes, as readable rows or JSON lines.

With ``--json`` each line is one JSON object holding ``topic`` and every payload field; a
batched ``trade``/``quote`` message prints one line per item, so ``--count`` counts lines.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from streamctl.bus.wire import parse_topic

__all__ = ["tail_topics", "to_row", "format_row"]


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


def tail_topics(endpoint: str, patterns: list[str], *, as_json: bool, count: int | None, timeout: float | None,
                out: IO[str]) -> int:
    """Subscribe and print until `count` lines or `timeout` seconds; return lines printed."""
    from streamctl.client import Subscriber

    printed = 0
    sub = Subscriber(endpoint)

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
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while count is None or printed < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            sub.poll(0.2 if left is None else min(left, 0.2))
    finally:
        sub.close()
    return printed
