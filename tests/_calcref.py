"""Reference calculators (pandas and plain Python) and tick generators for the calculator tests.

Every reference follows the documented summation order of `docs/calculators.md`: sums are
sequential in arrival order (``np.cumsum`` within a group, or a Python loop), never pandas'
compensated ``groupby().sum()`` or numpy's pairwise ``sum``. Exact integer quantities (SMA and
z-score sums) use Python integers.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo

import msgspec
import numpy as np
import pandas as pd

from streamctl.process.calc.engine import CalculatorSet
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind, Side

__all__ = [
    "make_trades", "frame", "run_split", "random_splits", "asdicts",
    "ref_time_bars", "ref_count_bars", "ref_threshold_bars",
    "ref_session_starts", "ref_session_vwap", "ref_rolling_vwap", "ref_sma", "ref_ema",
    "ref_zscore", "ref_jumps", "ref_iqr", "ref_books", "last_rows_per_batch",
]

T0 = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z


def make_trades(n: int, *, symbols: int = 4, seed: int = 0, fractional: bool = False, t0: int = T0,
                mean_gap_ns: int = 40_000_000, late_prob: float = 0.03, gap_prob: float = 0.01,
                jump_prob: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """`n` trades in arrival order: prices on a 0.01 grid, integer sizes (or fractional ones
    with 8 decimals), event times rising with random gaps, a few late (earlier) ticks, a few
    long gaps (for empty bars) and a few price jumps (for the anomaly rules)."""
    rng = np.random.default_rng(seed)
    sym = rng.integers(0, symbols, n).astype(np.int32)
    ticks = np.zeros(symbols, dtype=np.int64) + 10_000 + 2_500 * np.arange(symbols)  # 100.00, 125.00...
    price = np.empty(n, dtype=np.int64)
    for i in range(n):
        step = int(rng.integers(-3, 4))
        if rng.random() < jump_prob:
            step = int(rng.choice([-1, 1]) * rng.integers(300, 900))
        ticks[sym[i]] = max(100, ticks[sym[i]] + step)
        price[i] = ticks[sym[i]] * 10_000_000
    gaps = rng.exponential(mean_gap_ns, n).astype(np.int64)
    gaps[rng.random(n) < gap_prob] += rng.integers(2, 9) * 1_000_000_000
    ts = t0 + np.cumsum(gaps)
    late = rng.random(n) < late_prob
    ts[late] -= rng.integers(1, 3_000_000_000, late.sum())
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["ts_event"] = ts
    records["ts_recv"] = ts + rng.integers(1_000, 90_000, n)
    records["price"] = price
    if fractional:
        records["size"] = np.round(rng.random(n) * 3, 8) + 1e-8
    else:
        records["size"] = rng.integers(1, 500, n)
    records["kind"] = Kind.TRADE
    records["side"] = rng.choice([Side.BID, Side.ASK], n)
    records["instrument_id"] = sym
    return records, sym


def frame(records: np.ndarray, sym: np.ndarray) -> pd.DataFrame:
    """The valid trades as a DataFrame in arrival order (``row`` = position in `records`)."""
    keep = records["kind"] == Kind.TRADE
    return pd.DataFrame({
        "row": np.flatnonzero(keep), "sym": sym[keep].astype(np.int64), "ts": records["ts_event"][keep],
        "recv": records["ts_recv"][keep], "price": records["price"][keep], "size": records["size"][keep],
    })


def random_splits(n: int, rng: np.random.Generator, *, max_batch: int = 700) -> list[int]:
    """Cut points 0 = c0 < c1 < ... < ck = n with batches of 1..max_batch records."""
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, max_batch + 1))))
    return cuts


def run_split(config, records: np.ndarray, sym: np.ndarray, cuts: list[int], names: list[str],
              *, flush: bool = True) -> tuple[CalculatorSet, list[list[tuple[str, msgspec.Struct]]]]:
    """Feed `records` in the batches given by `cuts`; return the set and each batch's output
    (plus the flush output as a last batch when `flush`)."""
    calc = CalculatorSet(config, src="test", live=False)
    for name in names:
        calc.add_symbol(name)
    outs = [calc.on_batch(records[a:b], sym[a:b]).decode() for a, b in zip(cuts, cuts[1:], strict=False)]
    if flush:
        outs.append(calc.flush().decode())
    return calc, outs


def asdicts(items) -> list[dict]:
    """The payloads' fields, with the numbering (``seq``, ``src``) zeroed: references compute
    values; `test_calc_encode` checks the numbering."""
    return [{**msgspec.structs.asdict(payload), "seq": 0, "src": ""} for _, payload in items]


def _seqsum(values: np.ndarray) -> float:
    """Sequential left-to-right sum (the documented order)."""
    return float(np.cumsum(values)[-1])


def _bar(symbol, label, start, end, rows: pd.DataFrame) -> dict:
    px = rows["price"].to_numpy()
    sizes = rows["size"].to_numpy()
    volume = _seqsum(sizes)
    notional = _seqsum((px / 1e9) * sizes)
    return {"seq": 0, "src": "", "symbol": symbol, "interval": label, "ts_start": int(start), "ts_end": int(end),
            "open": px[0] / 1e9, "high": px.max() / 1e9, "low": px.min() / 1e9, "close": px[-1] / 1e9,
            "volume": volume, "trades": len(rows), "vwap": notional / volume,
            "ts_event": int(rows["ts"].iloc[-1]), "ts_recv": int(rows["recv"].iloc[-1]), "revision": 0}


def ref_time_bars(df: pd.DataFrame, seconds: int, names: list[str], *, emit_empty: bool = False,
                  max_empty: int = 1000) -> tuple[dict[str, list[dict]], int]:
    """Time bars per symbol (replay: closed by later trades, the last one flushed), and the
    number of late trades. A trade is late when its interval is before the latest interval
    any earlier trade of the symbol opened."""
    width = seconds * 1_000_000_000
    label = f"{seconds}s"
    df = df.assign(bucket=df["ts"] - df["ts"] % width)
    prev_max = df.groupby("sym")["bucket"].transform(lambda b: b.cummax().shift(1))
    late = df["bucket"] < prev_max
    bars: dict[str, list[dict]] = {}
    for s, rows in df[~late].groupby("sym", sort=True):
        out: list[dict] = []
        groups = list(rows.groupby("bucket", sort=True))
        for j, (bucket, g) in enumerate(groups):
            if out and emit_empty:
                prev = out[-1]
                gap = (bucket - (groups[j - 1][0] + width)) // width
                for e in range(min(gap, max_empty)):
                    begin = groups[j - 1][0] + width * (e + 1)
                    out.append({**prev, "ts_start": int(begin), "ts_end": int(begin + width), "open": prev["close"],
                                "high": prev["close"], "low": prev["close"], "volume": 0.0, "trades": 0,
                                "vwap": prev["close"]})
            end = bucket + width  # flushed bars keep their interval bounds too
            out.append(_bar(names[s], label, bucket, end, g))
        bars[f"bar.{label}.{names[s]}"] = out
    return bars, int(late.sum())


def ref_count_bars(df: pd.DataFrame, n: int, names: list[str]) -> dict[str, list[dict]]:
    """Tick bars: every `n` trades of a symbol (the last, partial one flushed)."""
    bars: dict[str, list[dict]] = {}
    for s, rows in df.groupby("sym", sort=True):
        rows = rows.assign(k=np.arange(len(rows)) // n)
        bars[f"bar.{n}t.{names[s]}"] = [_bar(names[s], f"{n}t", g["ts"].iloc[0], g["ts"].iloc[-1], g)
                                        for _, g in rows.groupby("k", sort=True)]
    return bars


def ref_threshold_bars(df: pd.DataFrame, threshold: float, label: str, names: list[str], *,
                       dollar: bool) -> dict[str, list[dict]]:
    """Volume (or dollar) bars: a bar closes on the trade that brings its volume (notional,
    ``price/1e9 * size`` summed in order) to >= `threshold`."""
    bars: dict[str, list[dict]] = {}
    for s, rows in df.groupby("sym", sort=True):
        out, start, acc = [], 0, 0.0
        px, sizes = rows["price"].to_numpy(), rows["size"].to_numpy()
        for i in range(len(rows)):
            term = (px[i] / 1e9) * sizes[i] if dollar else sizes[i]
            acc = term if i == start else acc + term
            if acc >= threshold or i == len(rows) - 1:
                g = rows.iloc[start:i + 1]
                out.append(_bar(names[s], label, g["ts"].iloc[0], g["ts"].iloc[-1], g))
                start = i + 1
        bars[f"bar.{label}.{names[s]}"] = out
    return bars


def ref_session_starts(ts: np.ndarray, start: str, timezone: str) -> np.ndarray:
    """Per event time, the latest daily session start (local HH:MM in `timezone`) at or before it."""
    zone = zoneinfo.ZoneInfo(timezone)
    hour, minute = map(int, start.split(":"))
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    out = np.empty(len(ts), dtype=np.int64)
    for i, t in enumerate(ts.tolist()):
        day = dt.datetime.fromtimestamp(t // 1_000_000_000, zone).date()
        best = None
        for delta in (-1, 0, 1):
            d = day + dt.timedelta(days=delta)
            cand = dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=zone)
            ns = (cand - epoch) // dt.timedelta(microseconds=1) * 1000
            if ns <= t and (best is None or ns > best):
                best = ns
        out[i] = best
    return out


def ref_session_vwap(df: pd.DataFrame, start: str, timezone: str) -> pd.DataFrame:
    """Per trade: session start (never moving back), session VWAP and volume after it."""
    starts = ref_session_starts(df["ts"].to_numpy(), start, timezone)
    df = df.assign(session=starts)
    df["session"] = df.groupby("sym")["session"].cummax()
    pv = np.empty(len(df))
    vol = np.empty(len(df))
    for _, idx in df.groupby(["sym", "session"]).indices.items():
        pv[idx] = np.cumsum((df["price"].to_numpy()[idx] / 1e9) * df["size"].to_numpy()[idx])
        vol[idx] = np.cumsum(df["size"].to_numpy()[idx])
    return df.assign(session_vwap=pv / vol, session_volume=vol)


def ref_rolling_vwap(df: pd.DataFrame, window: int) -> np.ndarray:
    """Per trade: VWAP of the symbol's last `window` trades, sums sequential, oldest first."""
    out = np.empty(len(df))
    for _, idx in df.groupby("sym").indices.items():
        px, sizes = df["price"].to_numpy()[idx], df["size"].to_numpy()[idx]
        for j in range(len(idx)):
            lo = max(0, j - window + 1)
            out[idx[j]] = _seqsum((px[lo:j + 1] / 1e9) * sizes[lo:j + 1]) / _seqsum(sizes[lo:j + 1])
    return out


def ref_sma(df: pd.DataFrame, window: int) -> np.ndarray:
    """Per trade: float(exact integer sum of the last `window` prices) / (window * 1e9); NaN
    before the window is full."""
    out = np.full(len(df), np.nan)
    for _, idx in df.groupby("sym").indices.items():
        prices = [int(p) for p in df["price"].to_numpy()[idx]]
        for j in range(window - 1, len(idx)):
            out[idx[j]] = float(sum(prices[j - window + 1:j + 1])) / (window * 1e9)
    return out


def ref_ema(df: pd.DataFrame, span: int) -> np.ndarray:
    """Per trade: pandas ``ewm(span, adjust=False).mean()`` of price/1e9 within the symbol."""
    px = df["price"] / 1e9
    return px.groupby(df["sym"]).transform(lambda s: s.ewm(span=span, adjust=False).mean()).to_numpy()


def ref_zscore(df: pd.DataFrame, window: int, threshold: float) -> list[tuple[int, float]]:
    """(row, z) of flagged trades: z = (W*p - S1) / sqrt(W*S2 - S1^2) over the previous W
    prices (exact integers; population std), flagged when |z| > threshold and std > 0."""
    flagged = []
    for _, idx in df.groupby("sym").indices.items():
        prices = [int(p) for p in df["price"].to_numpy()[idx]]
        for j in range(window, len(idx)):
            prev = prices[j - window:j]
            s1, s2 = sum(prev), sum(p * p for p in prev)
            num = window * s2 - s1 * s1
            if num > 0:
                z = float(window * prices[j] - s1) / math.sqrt(float(num))
                if abs(z) > threshold:
                    flagged.append((int(df["row"].iloc[idx[j]]), z))
    return sorted(flagged)


def ref_jumps(df: pd.DataFrame, pct: float) -> list[tuple[int, float]]:
    """(row, move %) of trades more than `pct` percent from the symbol's previous trade."""
    prev = df.groupby("sym")["price"].shift(1)
    has = prev.notna()
    p = df["price"][has].to_numpy()
    q = prev[has].astype(np.int64).to_numpy()
    move = 100.0 * (p - q).astype(np.float64) / np.abs(q).astype(np.float64)
    rows = df["row"][has].to_numpy()
    return [(int(r), float(m)) for r, m in zip(rows, move, strict=True) if abs(m) > pct]


def ref_iqr(df: pd.DataFrame, window: int, k: float) -> list[tuple[int, float]]:
    """(row, value) of trades outside ``[Q1 - k*IQR, Q3 + k*IQR]`` of the symbol's previous
    `window` prices, quartiles by numpy's default ``np.quantile`` (linear interpolation); none
    while IQR is 0. value = (p - Q1) / IQR below the fence, (p - Q3) / IQR above it."""
    flagged = []
    for _, idx in df.groupby("sym").indices.items():
        prices = df["price"].to_numpy()[idx]
        for j in range(window, len(idx)):
            q1, q3 = np.quantile(prices[j - window:j], [0.25, 0.75])
            iqr = q3 - q1
            p = float(prices[j])
            if iqr > 0 and (p < q1 - k * iqr or p > q3 + k * iqr):
                value = (p - q1) / iqr if p < q1 else (p - q3) / iqr
                flagged.append((int(df["row"].iloc[idx[j]]), float(value)))
    return sorted(flagged)


def ref_books(records: np.ndarray, sym: np.ndarray, depth: int) -> dict[int, tuple[list, list]]:
    """Final top-`depth` book per symbol from BOOK/RESET records, with plain dicts."""
    books: dict[int, tuple[dict, dict]] = {}
    for rec, s in zip(records.tolist(), sym.tolist(), strict=True):
        kind, side, price, size = rec[-4], rec[-3], rec[2], rec[4]
        bids, asks = books.setdefault(s, ({}, {}))
        if kind == Kind.RESET:
            bids.clear()
            asks.clear()
        elif kind == Kind.BOOK and side in (Side.BID, Side.ASK) and price != UNDEF_PRICE and size >= 0:
            levels = bids if side == Side.BID else asks
            if size == 0:
                levels.pop(price, None)
            else:
                levels[price] = size
    return {s: ([(p / 1e9, q) for p, q in sorted(b.items(), reverse=True)[:depth]],
                [(p / 1e9, q) for p, q in sorted(a.items())[:depth]]) for s, (b, a) in books.items()}


def last_rows_per_batch(df: pd.DataFrame, cuts: list[int]) -> list[dict[int, int]]:
    """For each batch, symbol -> position in `df` of its last trade in that batch."""
    rows = df["row"].to_numpy()
    out = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        lo, hi = np.searchsorted(rows, a), np.searchsorted(rows, b)
        last: dict[int, int] = {}
        for j in range(lo, hi):
            last[int(df["sym"].iloc[j])] = j
        out.append(last)
    return out
