"""Bars of every kind against the pandas/Python reference, exactly, under random batch splits."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from _calcref import (
    asdicts,
    frame,
    make_trades,
    random_splits,
    ref_count_bars,
    ref_threshold_bars,
    ref_time_bars,
    run_split,
)
from _data import sample

from streamctl.bus.wire import Bar
from streamctl.process.calc.bars import bar_specs, format_threshold
from streamctl.process.calc.settings import BarsConfig, CalculatorsConfig
from streamctl.shm.records import RECORD_DTYPE, Kind

NAMES = ["AAPL", "AAPLX", "BRK.B", "ESZ4"]


def bars_only(**bars) -> CalculatorsConfig:
    return CalculatorsConfig(bars=BarsConfig(**bars), vwap=None, anomalies=None, book=None)


def bars_by_topic(outs) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = defaultdict(list)
    for out in outs:
        for (topic, payload), d in zip(out, asdicts(out), strict=True):
            assert isinstance(payload, Bar)
            got[topic].append(d)
    return dict(got)


def expected_bars(df, config: BarsConfig, names) -> tuple[dict[str, list[dict]], int]:
    expected: dict[str, list[dict]] = {}
    late_trades = set()
    for spec in config.time:
        seconds = int(str(spec).rstrip("s"))
        bars, _ = ref_time_bars(df, seconds, names, emit_empty=config.emit_empty, max_empty=config.max_empty_bars)
        expected.update(bars)
        width = seconds * 1_000_000_000
        bucket = df["ts"] - df["ts"] % width
        prev_max = df.assign(b=bucket).groupby("sym")["b"].transform(lambda b: b.cummax().shift(1))
        late_trades |= set(df["row"][bucket < prev_max])
    for n in config.ticks:
        expected.update(ref_count_bars(df, n, names))
    for v in config.volume:
        expected.update(ref_threshold_bars(df, v, f"{format_threshold(v)}v", names, dollar=False))
    for d in config.dollar:
        expected.update(ref_threshold_bars(df, d, f"{format_threshold(d)}d", names, dollar=True))
    return expected, len(late_trades)


@pytest.mark.parametrize("fractional", [False, True], ids=["integer-sizes", "fractional-sizes"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_bar_kind_matches_reference_under_random_splits(seed, fractional):
    records, sym = make_trades(2500, seed=seed, fractional=fractional)
    volume = 700.0 if not fractional else 3.5
    config = BarsConfig(time=["1s", "5s", 60], ticks=[7, 50], volume=[volume], dollar=[60_000.0])
    df = frame(records, sym)
    expected, late = expected_bars(df, config, NAMES)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        cuts = random_splits(len(records), rng)
        calc, outs = run_split(bars_only(**{f: getattr(config, f) for f in config.__struct_fields__}),
                               records, sym, cuts, NAMES)
        assert bars_by_topic(outs) == expected
        assert calc.counters["late"] == late > 0
        assert calc.counters["trades"] == len(records)


def test_empty_bars_fill_gaps_flat_at_previous_close_and_are_capped():
    records, sym = make_trades(1500, seed=5, gap_prob=0.03)
    config = BarsConfig(time=["1s", "2s"], emit_empty=True, max_empty_bars=3)
    df = frame(records, sym)
    expected, _ = expected_bars(df, config, NAMES)
    n_empty = sum(1 for bars in expected.values() for b in bars if b["trades"] == 0)
    assert n_empty > 0
    for cuts in (random_splits(len(records), np.random.default_rng(0)), [0, len(records)]):
        calc, outs = run_split(bars_only(time=["1s", "2s"], emit_empty=True, max_empty_bars=3), records, sym,
                               cuts, NAMES)
        assert bars_by_topic(outs) == expected
        assert calc.counters["empty_bars"] == n_empty
        assert calc.counters["empty_skipped"] > 0


def one_trade(ts: int, price: float, size: float = 1.0) -> np.ndarray:
    rec = np.zeros(1, dtype=RECORD_DTYPE)
    rec["ts_event"], rec["ts_recv"] = ts, ts + 5
    rec["price"] = round(price * 1e9)
    rec["size"] = size
    rec["kind"] = Kind.TRADE
    return rec


SEC = 1_000_000_000
BASE = 1_700_000_040 * SEC  # a multiple of 60 s


def test_time_bars_are_aligned_in_event_time_and_a_late_tick_is_counted_not_applied():
    calc = bars_only_set(["60s"])
    assert calc.on_batch(one_trade(BASE + 61 * SEC, 10.0), ZERO).decode() == []  # first bar: [60s, 120s), partial
    assert calc.on_batch(one_trade(BASE + 119 * SEC, 11.0), ZERO).decode() == []
    out = calc.on_batch(one_trade(BASE + 125 * SEC, 12.0), ZERO).decode()
    [(topic, bar)] = out
    assert topic == "bar.60s.AAPL"
    assert (bar.ts_start, bar.ts_end) == (BASE + 60 * SEC, BASE + 120 * SEC)
    assert (bar.open, bar.high, bar.low, bar.close, bar.trades, bar.volume) == (10.0, 11.0, 10.0, 11.0, 2, 2.0)
    assert bar.ts_event == BASE + 119 * SEC and bar.ts_recv == BASE + 119 * SEC + 5
    assert calc.on_batch(one_trade(BASE + 100 * SEC, 99.0), ZERO).decode() == []  # its interval is closed: late
    assert calc.counters["late"] == 1 and calc.counters["late.60s"] == 1
    [(_, flushed)] = calc.flush().decode()
    assert (flushed.ts_start, flushed.ts_end, flushed.close, flushed.trades) == (BASE + 120 * SEC,
                                                                                   BASE + 180 * SEC, 12.0, 1)
    assert calc.flush().decode() == []


ZERO = np.zeros(1, dtype=np.int32)


def bars_only_set(time, *, live=False, **kw):
    from streamctl.process.calc.engine import CalculatorSet

    calc = CalculatorSet(bars_only(time=time, **kw), src="t", live=live)
    calc.add_symbol("AAPL")
    return calc


def test_live_clock_closes_bars_after_close_delay_and_replay_ignores_the_clock():
    live = bars_only_set(["1s"], live=True, close_delay=0.25)
    replay = bars_only_set(["1s"], live=False, close_delay=0.25)
    for calc in (live, replay):
        calc.on_batch(one_trade(BASE + SEC // 2, 5.0), ZERO)
    assert live.on_clock(BASE + SEC + 249_999_999).decode() == []
    [(_, bar)] = live.on_clock(BASE + SEC + 250_000_000).decode()
    assert (bar.ts_start, bar.ts_end, bar.close) == (BASE, BASE + SEC, 5.0)
    assert live.on_clock(BASE + 5 * SEC).decode() == []
    assert replay.on_clock(BASE + 5 * SEC).decode() == []
    # After the clock closed it, a trade in that second is late; the same bar comes from replay.
    live.on_batch(one_trade(BASE + SEC - 1, 6.0), ZERO)
    assert live.counters["late"] == 1
    [(_, replay_bar)] = replay.on_batch(one_trade(BASE + 2 * SEC, 7.0), ZERO).decode()
    assert replay_bar == bar


def test_each_symbol_closes_by_its_own_feeds_clock():
    """A replayed symbol (2024 event times) and a live one share a worker: one clock per symbol."""
    calc = bars_only_set(["1s"], live=True, close_delay=0.25)  # AAPL (index 0): a live feed
    replayed = calc.add_symbol("ESU4")
    live_start = BASE + 400_000_000 * SEC
    calc.on_batch(one_trade(live_start + SEC // 2, 5.0), ZERO)
    calc.on_batch(one_trade(BASE + SEC // 2, 6.0), np.array([replayed], dtype=np.int32))
    delay = SEC // 4
    assert calc.on_clock(np.array([live_start + SEC + delay - 1, BASE + SEC + delay - 1])).decode() == []
    [(topic, bar)] = calc.on_clock(np.array([live_start + SEC + delay, BASE + SEC + delay - 1])).decode()
    assert (topic, bar.ts_end) == ("bar.1s.AAPL", live_start + SEC)
    [(topic, bar)] = calc.on_clock(np.array([live_start + SEC + delay, BASE + SEC + delay])).decode()
    assert (topic, bar.ts_end) == ("bar.1s.ESU4", BASE + SEC)
    with pytest.raises(ValueError, match=r"`clock_ns` must have one entry per symbol \(2\); was 1"):
        calc.on_clock(np.array([BASE]))


def test_threshold_labels_have_no_trailing_zero_and_no_dot():
    specs = bar_specs(BarsConfig(time=["1s", 60, "5m"], ticks=[100], volume=[5000.0, 0.5], dollar=[1e6]))
    assert [s.label for s in specs] == ["1s", "60s", "300s", "100t", "5000v", "0p5v", "1000000d"]


def test_volume_bar_takes_the_whole_trade_that_crosses_the_threshold():
    from streamctl.process.calc.engine import CalculatorSet

    calc = CalculatorSet(bars_only(volume=[10.0]), src="t", live=False)
    calc.add_symbol("AAPL")
    batch = np.concatenate([one_trade(BASE + i, 1.0 + i / 100, size) for i, size in enumerate([4, 4, 5, 10, 1])])
    out = calc.on_batch(batch, np.zeros(5, dtype=np.int32)).decode()
    assert [(b.volume, b.trades, b.ts_start, b.ts_end) for _, b in out] == [(13.0, 3, BASE, BASE + 2),
                                                                            (10.0, 1, BASE + 3, BASE + 3)]
    [(_, rest)] = calc.flush().decode()
    assert (rest.volume, rest.trades) == (1.0, 1)


def test_real_es_trades_make_the_reference_bars():
    path = sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    databento = pytest.importorskip("databento")
    trades = [r for r in databento.DBNStore.from_file(str(path)) if hasattr(r, "price")]
    records = np.zeros(len(trades), dtype=RECORD_DTYPE)
    records["ts_event"] = [r.ts_event for r in trades]
    records["ts_recv"] = [r.ts_recv for r in trades]
    records["price"] = [r.price for r in trades]
    records["size"] = [r.size for r in trades]
    records["kind"] = Kind.TRADE
    sym = np.zeros(len(records), dtype=np.int32)
    assert len(records) == 120
    config = BarsConfig(time=["1s", "60s"], ticks=[10], volume=[25.0])
    expected, late = expected_bars(frame(records, sym), config, ["ESU4"])
    assert len(expected["bar.60s.ESU4"]) == 4 and late == 0  # minutes 23:58, 23:59, 00:00, 00:01
    for cuts in ([0, 120], [0, 1, 2, 50, 119, 120]):
        _, outs = run_split(bars_only(time=["1s", "60s"], ticks=[10], volume=[25.0]), records, sym, cuts, ["ESU4"])
        assert bars_by_topic(outs) == expected
