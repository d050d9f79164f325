"""Worker calculators: `CalculatorSet` against the plain per-tick Python way, on the same ticks.

Workload: 100 symbols of synthetic GBM trades on a 0.01 tick grid with integer sizes, 50 k
trades/s of event time in total. Calculators: time bars 1s, 60s, 300s + 100-tick bars +
session and rolling VWAP + EMA(20) + rolling z-score anomaly (window 100) ("full"); the same
plus the IQR rule (window 100, k 1.5); and bars only.

`CalculatorSet.on_batch` returns its payloads encoded as MessagePack and numbered (a `Messages`
batch the publisher sends as it is), so its rate includes the encoding; the baseline's Structs
are not encoded. The baseline (written here, for the ratio) is what one writes first: one `@dataclass` per
tick, a dict of per-symbol Python aggregator objects doing the bars, VWAPs and EMA, and a
rolling z-score with numpy on every tick. It runs on fewer ticks.

The headline rate is batch size / median batch time (robust when other work shares the
machine); the note gives the fastest whole pass and its CPU-time rate too.
Run: ``python benchmarks/bench_worker.py [--quick]``.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import numpy as np
from _table import bench_main

from streamctl.bus.wire import Bar, Indicator, Vwap, topic
from streamctl.process.calc import settings
from streamctl.process.calc.engine import CalculatorSet
from streamctl.shm.records import RECORD_DTYPE, Kind

__all__ = ["run", "main", "make_ticks", "FULL_CONFIG", "IQR_CONFIG", "BARS_CONFIG"]

SYMBOLS = 100
START_NS = 1_704_205_800_000_000_000
STEP_NS = 20_000  # 50 k trades/s over all symbols
TIME_BARS = [1, 60, 300]
TICK_BAR = 100
EMA_SPAN = 20
WINDOW = 100

def _full_config(iqr: settings.IQRConfig | None) -> settings.CalculatorsConfig:
    return settings.CalculatorsConfig(
        bars=settings.BarsConfig(time=[f"{s}s" for s in TIME_BARS], ticks=[TICK_BAR]),
        vwap=settings.VwapConfig(rolling_window=WINDOW), ema=[EMA_SPAN],
        anomalies=settings.AnomalyConfig(zscore=settings.ZScoreConfig(window=WINDOW, threshold=4.0), jump_pct=None,
                                         crossed_quotes=False, iqr=iqr),
        book=None)


FULL_CONFIG = _full_config(None)
IQR_CONFIG = _full_config(settings.IQRConfig(window=WINDOW, k=1.5))
BARS_CONFIG = settings.CalculatorsConfig(
    bars=settings.BarsConfig(time=[f"{s}s" for s in TIME_BARS], ticks=[TICK_BAR]), vwap=None, anomalies=None,
    book=None)


def make_ticks(n: int, *, symbols: int = SYMBOLS, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """`n` trades over `symbols` symbols: GBM mid on a 0.01 grid, sizes 1..500."""
    rng = np.random.default_rng(seed)
    sym = rng.integers(0, symbols, n).astype(np.int32)
    steps = rng.normal(0.0, 2e-4, n)
    log_price = np.zeros(n)
    for s in range(symbols):
        rows = np.flatnonzero(sym == s)
        log_price[rows] = math.log(50.0 + 2.0 * s) + np.cumsum(steps[rows])
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["price"] = np.rint(np.exp(log_price) * 100).astype(np.int64) * 10_000_000
    records["size"] = rng.integers(1, 501, n)
    records["ts_event"] = START_NS + np.arange(n, dtype=np.int64) * STEP_NS
    records["ts_recv"] = records["ts_event"] + 15_000
    records["kind"] = Kind.TRADE
    records["instrument_id"] = sym
    return records, sym


# --------------------------------------------------------------------------- the per-tick baseline


@dataclass
class Tick:
    symbol: str
    ts_event: int
    ts_recv: int
    price: float
    size: float


class _OpenBar:
    __slots__ = ("start", "open", "high", "low", "close", "volume", "notional", "trades", "ts_event", "ts_recv")

    def __init__(self, start: int, tick: Tick):
        self.start = start
        self.open = self.high = self.low = self.close = tick.price
        self.volume = self.notional = 0.0
        self.trades = 0
        self.add(tick)

    def add(self, tick: Tick) -> None:
        self.high = max(self.high, tick.price)
        self.low = min(self.low, tick.price)
        self.close = tick.price
        self.volume += tick.size
        self.notional += tick.price * tick.size
        self.trades += 1
        self.ts_event, self.ts_recv = tick.ts_event, tick.ts_recv

    def to_bar(self, symbol: str, label: str, end: int) -> Bar:
        return Bar(symbol=symbol, interval=label, ts_start=self.start, ts_end=end, open=self.open, high=self.high,
                   low=self.low, close=self.close, volume=self.volume, trades=self.trades,
                   vwap=self.notional / self.volume, ts_event=self.ts_event, ts_recv=self.ts_recv)


class _SymbolAggregator:
    """Everything for one symbol, one tick at a time."""

    def __init__(self, symbol: str, indicators: bool):
        self.symbol = symbol
        self.indicators = indicators
        self.time_bars: dict[int, _OpenBar | None] = dict.fromkeys(TIME_BARS)
        self.tick_bar: _OpenBar | None = None
        self.session_pv = self.session_vol = 0.0
        self.window: collections.deque[Tick] = collections.deque(maxlen=WINDOW)
        self.prices: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.ema: float | None = None
        self.last: Tick | None = None

    def on_tick(self, tick: Tick, out: list) -> None:
        for seconds, bar in self.time_bars.items():
            width = seconds * 1_000_000_000
            start = tick.ts_event - tick.ts_event % width
            if bar is not None and bar.start != start:
                out.append((f"bar.{seconds}s.{self.symbol}", bar.to_bar(self.symbol, f"{seconds}s", bar.start + width)))
                bar = None
            if bar is None:
                self.time_bars[seconds] = _OpenBar(start, tick)
            else:
                bar.add(tick)
        if self.tick_bar is None:
            self.tick_bar = _OpenBar(tick.ts_event, tick)
        else:
            self.tick_bar.add(tick)
        if self.tick_bar.trades == TICK_BAR:
            out.append((f"bar.{TICK_BAR}t.{self.symbol}", self.tick_bar.to_bar(self.symbol, f"{TICK_BAR}t",
                                                                               tick.ts_event)))
            self.tick_bar = None
        self.last = tick
        if not self.indicators:
            return
        if len(self.prices) == WINDOW:
            window = np.array(self.prices)
            std = window.std()
            if std > 0 and abs((tick.price - window.mean()) / std) > 4.0:
                out.append((f"anomaly.{self.symbol}", tick))
        self.prices.append(tick.price)
        self.window.append(tick)
        self.session_pv += tick.price * tick.size
        self.session_vol += tick.size
        self.ema = tick.price if self.ema is None else (1 - 2 / (EMA_SPAN + 1)) * self.ema + 2 / (EMA_SPAN + 1) * tick.price

    def publish(self, out: list) -> None:
        last = self.last
        rolling = sum(t.price * t.size for t in self.window) / sum(t.size for t in self.window)
        out.append((topic("vwap", self.symbol), Vwap(
            symbol=self.symbol, ts_event=last.ts_event, ts_recv=last.ts_recv, session_start=0,
            session_vwap=self.session_pv / self.session_vol, session_volume=self.session_vol,
            rolling_vwap=rolling, window=WINDOW)))
        out.append((topic("ema", self.symbol, EMA_SPAN), Indicator(
            symbol=self.symbol, name="ema", window=EMA_SPAN, value=self.ema, ts_event=last.ts_event,
            ts_recv=last.ts_recv)))


def baseline_batch(aggs: dict[str, _SymbolAggregator], names: list[str], records: np.ndarray, sym: np.ndarray,
                   indicators: bool) -> list:
    out: list = []
    touched: dict[str, _SymbolAggregator] = {}
    for rec, s in zip(records.tolist(), sym.tolist(), strict=True):
        tick = Tick(symbol=names[s], ts_event=rec[0], ts_recv=rec[1], price=rec[2] / 1e9, size=rec[4])
        agg = aggs.get(tick.symbol)
        if agg is None:
            agg = aggs[tick.symbol] = _SymbolAggregator(tick.symbol, indicators)
        agg.on_tick(tick, out)
        touched[tick.symbol] = agg
    if indicators:
        for agg in touched.values():
            agg.publish(out)
    return out


# --------------------------------------------------------------------------- measurement


def _measure(step, records: np.ndarray, sym: np.ndarray, batch: int, repeats: int,
             warm: int = 0) -> dict[str, float]:
    """Rates (ticks/s) over `repeats` passes, each on a fresh state from `step()`.

    The first `warm` ticks fill the windows untimed (so every timed tick runs the z-score).
    ``median``: batch size / median batch time over all passes (robust on a shared machine);
    ``best``: the fastest whole pass; ``cpu``: the best pass in process CPU time.
    """
    best = cpu_best = 0.0
    times: list[float] = []
    outputs = 0
    n = len(records) - warm
    for _ in range(repeats):
        process = step()
        for i in range(0, warm, batch):
            process(records[i:min(i + batch, warm)], sym[i:min(i + batch, warm)])
        outputs = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(warm, len(records), batch):
            t0 = time.perf_counter()
            outputs += len(process(records[i:i + batch], sym[i:i + batch]))
            times.append(time.perf_counter() - t0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        best = max(best, n / wall)
        cpu_best = max(cpu_best, n / max(cpu, 1e-9))
    return {"median": batch / float(np.median(times)), "best": best, "cpu": cpu_best, "outputs": outputs, "n": n}


def _calc_step(config: settings.CalculatorsConfig):
    def make():
        calc = CalculatorSet(config, src="bench", live=False)
        for s in range(SYMBOLS):
            calc.add_symbol(f"SYM{s:03d}")
        return calc.on_batch
    return make


def _baseline_step(indicators: bool):
    names = [f"SYM{s:03d}" for s in range(SYMBOLS)]

    def make():
        aggs: dict[str, _SymbolAggregator] = {}
        return lambda records, sym: baseline_batch(aggs, names, records, sym, indicators)
    return make


def run(quick: bool) -> list[dict]:
    """Measure; return rows ``{"benchmark", "value", "unit", "note"}``."""
    n = 200_000 if quick else 2_000_000
    n_base = 5_000 if quick else 30_000
    warm = 15_360  # 150 trades per symbol: every timed tick has a full z-score window
    repeats = 2 if quick else 3
    records, sym = make_ticks(n)
    t0 = time.perf_counter()
    _calc_step(FULL_CONFIG)()(records[:2048], sym[:2048])
    _calc_step(BARS_CONFIG)()(records[:2048], sym[:2048])
    warmup = time.perf_counter() - t0
    rows: list[dict] = []
    full_rate: dict[int, float] = {}
    base_full = 1.0
    for label, config, base_indicators in (("full", FULL_CONFIG, True), ("full + IQR", IQR_CONFIG, None),
                                           ("bars only", BARS_CONFIG, False)):
        for batch in (1024, 4096):
            m = _measure(_calc_step(config), records, sym, batch, repeats, warm)
            if label == "full":
                full_rate[batch] = m["median"]
            rows.append({"benchmark": f"CalculatorSet {label}, batch {batch}", "value": round(m["median"]),
                         "unit": "ticks/s", "note": f"median batch; best pass {m['best']:,.0f}/s, cpu-time "
                                                    f"{m['cpu']:,.0f}/s; {m['outputs']:,} payloads; {m['n']:,} ticks"})
        if base_indicators is None:  # the baseline has no IQR rule: nothing to compare with
            continue
        m = _measure(_baseline_step(base_indicators), records[:warm + n_base], sym[:warm + n_base], 1024, 1, warm)
        rows.append({"benchmark": f"per-tick Python baseline {label}, batch 1024", "value": round(m["median"]),
                     "unit": "ticks/s", "note": f"median batch; best pass {m['best']:,.0f}/s, cpu-time "
                                                f"{m['cpu']:,.0f}/s; {m['n']:,} ticks"})
        if label == "full":
            base_full = m["median"]
    for batch, rate in full_rate.items():
        rows.append({"benchmark": f"speed-up full, batch {batch}", "value": round(rate / base_full, 1),
                     "unit": "x", "note": "CalculatorSet / per-tick baseline (median batch rates)"})
    rows.append({"benchmark": "JIT warm-up (first batches, both configs)", "value": round(warmup, 2), "unit": "s",
                 "note": "compiles on a first run (about 90 s on 2 cores), then loads from numba's cache"})
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
