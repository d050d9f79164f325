"""`streamctl plot`: bars from a file -> one self-contained interactive candlestick chart (HTML).

Reads what `streamctl replay --out` writes (JSON Lines or Parquet rows holding ``topic`` and the
payload fields), or any Parquet/JSON Lines table of bars with ``symbol`` and ``interval``
columns. Keeps the bars of one symbol and interval, and that symbol's anomalies, each placed
on the candle it fell in. A line that is not JSON is counted and skipped, and said once.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamctl.process.calc.settings import parse_interval
from streamctl.web.assets import standalone_chart

__all__ = ["PlotResult", "plot_file", "normalize_interval"]

_BAR_FIELDS = ("ts_start", "ts_end", "open", "high", "low", "close", "volume", "trades", "vwap")
_ANOMALY_FIELDS = ("ts_event", "rule", "detail", "price")


class PlotResult:
    """What `plot_file` drew and skipped."""

    def __init__(self, bars: int, anomalies: int, skipped: int, first_error: str | None) -> None:
        self.bars, self.anomalies, self.skipped, self.first_error = bars, anomalies, skipped, first_error


def normalize_interval(text: str) -> str:
    """``60s``/``1m``/``60`` -> ``60s``, as bar topics spell time intervals. Only time bars: a chart's
    time axis needs one candle per instant, and tick, volume and dollar bars can close several
    times a second."""
    try:
        return f"{parse_interval(text)}s"
    except ValueError:
        raise ValueError(f"`--interval` must be a time interval (1s, 60s, 5m, 1h); was {text}") from None


def _rows(path: Path, problems: list[str]) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError("reading Parquet needs pyarrow: pip install 'streamctl[parquet]'") from None
        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{number}: not a JSON object")
                continue
            yield row


def _is(row: dict[str, Any], kind: str, symbol: str, interval: str | None = None) -> bool:
    topic = row.get("topic")
    if topic is not None:
        return topic == (f"bar.{interval}.{symbol}" if kind == "bar" else f"{kind}.{symbol}")
    if row.get("symbol") != symbol:
        return False
    return row.get("interval") == interval if kind == "bar" else "rule" in row


def plot_file(path: str, out: str, *, symbol: str, interval: str) -> PlotResult:
    """Write the chart of `symbol` at `interval` from `path` to `out`."""
    source = Path(path)
    if source.suffix not in (".jsonl", ".json", ".ndjson", ".parquet"):
        raise ValueError(f"`BARS` must be a .jsonl or .parquet file; was {path}")
    name = normalize_interval(interval)
    problems: list[str] = []
    bars: dict[int, dict[str, Any]] = {}
    anomalies: list[dict[str, Any]] = []
    for row in _rows(source, problems):
        if _is(row, "bar", symbol, name):
            try:
                bar = {field: row[field] for field in _BAR_FIELDS}
            except KeyError as exc:
                problems.append(f"{path}: a {name} bar of {symbol} has no `{exc.args[0]}`")
                continue
            bars[int(bar["ts_start"])] = bar  # a repeated bar (e.g. flushed twice) is drawn once
        elif _is(row, "anomaly", symbol) and all(field in row for field in _ANOMALY_FIELDS):
            anomalies.append({field: row[field] for field in _ANOMALY_FIELDS})
    if not bars:
        raise ValueError(f"no {name} bars of {symbol} in {path}")
    ordered = [bars[start] for start in sorted(bars)]
    starts = [int(b["ts_start"]) for b in ordered]
    placed = []
    for anomaly in anomalies:  # on the candle it fell in
        i = bisect.bisect_right(starts, int(anomaly["ts_event"])) - 1
        if i >= 0 and int(anomaly["ts_event"]) < int(ordered[i]["ts_end"]):
            placed.append(dict(anomaly, ts_event=starts[i]))
    Path(out).write_text(standalone_chart(f"{symbol} {name} ({source.name})", ordered, placed, 1))
    return PlotResult(len(ordered), len(placed), len(problems), problems[0] if problems else None)
