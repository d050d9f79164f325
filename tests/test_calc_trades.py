"""VWAPs, SMA, EMA and the anomaly rules against the pandas/numpy/Python reference, exactly, under
random batch splits (the published value is the one after each symbol's last trade of a batch)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from _calcref import (
    frame,
    last_rows_per_batch,
    make_trades,
    random_splits,
    ref_ema,
    ref_iqr,
    ref_jumps,
    ref_rolling_vwap,
    ref_session_starts,
    ref_session_vwap,
    ref_sma,
    ref_zscore,
    run_split,
)

from streamctl.bus.wire import Anomaly, Indicator, Vwap
from streamctl.cli.config import ConfigError, parse_config
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.session_clock import SessionClock
from streamctl.process.calc.settings import (
    AnomalyConfig,
    BarsConfig,
    CalculatorsConfig,
    IQRConfig,
    VwapConfig,
    ZScoreConfig,
)
from streamctl.shm.records import RECORD_DTYPE, Kind

NAMES = ["AAPL", "AAPLX", "BRK.B", "ESZ4"]
NY_DST_2024 = 1_710_000_000_000_000_000  # 2024-03-09T16:00Z, the day before New York springs forward


def config(*, session="00:00", tz="UTC", rolling=13, sma=(5, 20), ema=(3, 12, 50), window=15, threshold=2.5,
           jump=1.5, iqr: IQRConfig | None = None) -> CalculatorsConfig:
    return CalculatorsConfig(
        bars=BarsConfig(), vwap=VwapConfig(session_start=session, timezone=tz, rolling_window=rolling),
        sma=list(sma), ema=list(ema), book=None,
        anomalies=AnomalyConfig(zscore=ZScoreConfig(window=window, threshold=threshold), jump_pct=jump,
                                crossed_quotes=True, iqr=iqr))


CASES = {
    "utc-int": dict(seed=11, fractional=False, t0=1_704_205_800_000_000_000, session="00:00", tz="UTC"),
    "ny-dst-fractional": dict(seed=12, fractional=True, t0=NY_DST_2024, session="02:30", tz="America/New_York"),
    "tokyo-int": dict(seed=13, fractional=False, t0=NY_DST_2024, session="09:00", tz="Asia/Tokyo"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vwap_sma_ema_anomalies_match_reference_under_random_splits(case):
    c = CASES[case]
    # Mean gap 100 s: 2000 trades span ~2.3 days, so sessions reset (and cross the DST change).
    records, sym = make_trades(2000, seed=c["seed"], fractional=c["fractional"], t0=c["t0"],
                               mean_gap_ns=100_000_000_000, late_prob=0.05, jump_prob=0.02)
    cfg = config(session=c["session"], tz=c["tz"])
    df = frame(records, sym)
    sess = ref_session_vwap(df, c["session"], c["tz"])
    assert sess.groupby(["sym", "session"]).ngroups >= 2 * len(NAMES)  # resets happened
    rolling = ref_rolling_vwap(df, 13)
    smas = {n: ref_sma(df, n) for n in (5, 20)}
    emas = {n: ref_ema(df, n) for n in (3, 12, 50)}
    z = ref_zscore(df, 15, 2.5)
    jumps = ref_jumps(df, 1.5)
    assert z and jumps
    expected_anomalies = sorted([(row, "zscore", v) for row, v in z] + [(row, "jump", v) for row, v in jumps],
                                key=lambda a: (a[0], a[1] != "zscore"))
    rng = np.random.default_rng(c["seed"])
    for cuts in [random_splits(len(records), rng) for _ in range(3)] + [[0, len(records)]]:
        _, outs = run_split(cfg, records, sym, cuts, NAMES, flush=False)
        got_anomalies = []
        for out, last in zip(outs, last_rows_per_batch(df, cuts), strict=True):
            vwaps = {p.symbol: p for _, p in out if isinstance(p, Vwap)}
            assert sorted(vwaps) == sorted(NAMES[s] for s in last)
            for s, j in last.items():
                v = vwaps[NAMES[s]]
                row = sess.iloc[j]
                assert (v.session_vwap, v.session_volume, v.session_start) == (
                    row["session_vwap"], row["session_volume"], row["session"])
                assert v.rolling_vwap == rolling[j] and v.window == 13
                assert (v.ts_event, v.ts_recv) == (df["ts"].iloc[j], df["recv"].iloc[j])
            indicators = {(p.name, p.window, p.symbol): p.value for _, p in out if isinstance(p, Indicator)}
            want = {}
            for s, j in last.items():
                for n, values in smas.items():
                    if not math.isnan(values[j]):
                        want[("sma", n, NAMES[s])] = values[j]
                for n, values in emas.items():
                    want[("ema", n, NAMES[s])] = values[j]
            assert indicators == want
            got_anomalies += [(p.rule, p.value, p.ts_event, p.symbol) for _, p in out if isinstance(p, Anomaly)]
        assert got_anomalies == [(rule, v, int(records["ts_event"][row]), NAMES[sym[row]])
                                 for row, rule, v in expected_anomalies]


def test_session_boundaries_follow_dst_and_match_a_direct_computation():
    clock = SessionClock("02:30", "America/New_York")
    ts = NY_DST_2024 + np.arange(0, 4 * 86_400, 977, dtype=np.int64) * 1_000_000_000
    bounds = clock.cover(int(ts[0]), int(ts[-1]))
    starts = bounds[np.searchsorted(bounds, ts, side="right") - 1]
    np.testing.assert_array_equal(starts, ref_session_starts(ts, "02:30", "America/New_York"))
    # 02:30 does not exist on 2024-03-10 in New York: the session starts at 03:30 EDT = 07:30Z.
    assert 1_710_055_800_000_000_000 in bounds  # 2024-03-10T07:30:00Z
    assert 1_710_052_200_000_000_000 not in bounds  # 06:30Z would be 01:30 EST
    with pytest.raises(ValueError, match="`timezone` must be an IANA time zone; was 'Mars/Olympus'"):
        SessionClock("02:30", "Mars/Olympus")


def quote(ts: int, bid: float, ask: float) -> np.ndarray:
    rec = np.zeros(1, dtype=RECORD_DTYPE)
    rec["ts_event"], rec["ts_recv"] = ts, ts + 1
    rec["price"], rec["price2"] = round(bid * 1e9), round(ask * 1e9)
    rec["size"] = rec["size2"] = 1.0
    rec["kind"] = Kind.QUOTE
    return rec


def test_crossed_and_locked_quotes_are_flagged_in_record_order():
    calc = CalculatorSet(config(), src="t", live=False)
    calc.add_symbol("AAPL")
    batch = np.concatenate([quote(1, 10.0, 10.01), quote(2, 10.02, 10.01), quote(3, 10.01, 10.01)])
    out = calc.on_batch(batch, np.zeros(3, dtype=np.int32)).decode()
    assert [(t, p.rule, p.value, p.price, p.ts_event) for t, p in out] == [
        ("anomaly.AAPL", "crossed", (10_020_000_000 - 10_010_000_000) / 1e9, 10.02, 2),
        ("anomaly.AAPL", "locked", 0.0, 10.01, 3)]
    assert "bid 10.02 > ask 10.01" in out[0][1].detail
    assert calc.counters["quotes"] == 3


def test_zscore_is_exact_for_large_prices_and_stays_quiet_on_a_flat_window():
    """Prices near 1e6 need 128-bit sums; a flat window (std 0) never flags."""
    cfg = config(window=4, threshold=1.0, jump=None, sma=(), ema=())
    calc = CalculatorSet(cfg, src="t", live=False)
    calc.add_symbol("BRK.A")
    prices = [987_654.321_000_001, 987_654.321_000_001, 987_654.321_000_001, 987_654.321_000_001,
              987_654.321_000_002, 987_654.321_000_000, 987_654.321_000_003, 987_654.321_000_001, 987_654.4]
    batch = np.zeros(len(prices), dtype=RECORD_DTYPE)
    batch["ts_event"] = np.arange(1, len(prices) + 1)
    batch["price"] = [round(p * 1e9) for p in prices]
    batch["size"] = 1.0
    batch["kind"] = Kind.TRADE
    out = calc.on_batch(batch, np.zeros(len(prices), dtype=np.int32)).decode()
    got = [(p.ts_event, p.value) for _, p in out if isinstance(p, Anomaly)]
    df = frame(batch, np.zeros(len(prices), dtype=np.int32))
    assert got == [(int(batch["ts_event"][row]), z) for row, z in ref_zscore(df, 4, 1.0)]
    assert got and all(ts != 5 for ts, _ in got)  # trade 5 follows a flat window: std 0, no flag
    assert calc.counters["zscore_disabled"] == 0


def trades(prices: list[float]) -> np.ndarray:
    batch = np.zeros(len(prices), dtype=RECORD_DTYPE)
    batch["ts_event"] = np.arange(1, len(prices) + 1)
    batch["price"] = [round(p * 1e9) for p in prices]
    batch["size"] = 1.0
    batch["kind"] = Kind.TRADE
    return batch


@pytest.mark.parametrize(("prices", "flagged"), [
    ([10.0, 10.01, 10.02, 10.01, 11.0], [5]),  # the first trade with a full window is checked
    ([10.0, 10.01, 10.02, 15.0], []),  # not before the window is full
])
def test_zscore_checks_from_the_first_full_window(prices, flagged):
    calc = CalculatorSet(config(window=4, threshold=3.0, jump=None, sma=(), ema=()), src="t", live=False)
    calc.add_symbol("AAPL")
    out = calc.on_batch(trades(prices), np.zeros(len(prices), dtype=np.int32)).decode()
    assert [p.ts_event for _, p in out if isinstance(p, Anomaly)] == flagged


# --------------------------------------------------------------------------- the IQR rule

RULE_ORDER = {"zscore": 0, "jump": 1, "iqr": 2}


@pytest.mark.parametrize(("iqr_window", "k", "seed", "fractional"), [
    (4, 1.5, 21, False),  # quartiles between entries (virtual index 0.75 and 2.25)
    (15, 1.5, 22, True),  # on entries (3.5 and 10.5) with fractional sizes
    (100, 3.0, 23, False),  # longer than the z-score window: the ring grows for it
])
def test_iqr_matches_numpy_quantiles_under_random_splits(iqr_window, k, seed, fractional):
    records, sym = make_trades(3000, seed=seed, fractional=fractional, jump_prob=0.02)
    df = frame(records, sym)
    iqr = ref_iqr(df, iqr_window, k)
    assert 0 < len(iqr) < len(df) // 2  # the rule flags some trades, not all
    assert any(v < 0 for _, v in iqr) and any(v > 0 for _, v in iqr)  # both fences
    expected = sorted([(row, "zscore", v) for row, v in ref_zscore(df, 15, 2.5)]
                      + [(row, "jump", v) for row, v in ref_jumps(df, 1.5)]
                      + [(row, "iqr", v) for row, v in iqr], key=lambda a: (a[0], RULE_ORDER[a[1]]))
    want = [(rule, v, int(records["ts_event"][row]), NAMES[sym[row]], records["price"][row] / 1e9)
            for row, rule, v in expected]
    cfg = config(iqr=IQRConfig(window=iqr_window, k=k))
    rng = np.random.default_rng(seed)
    for cuts in [random_splits(len(records), rng) for _ in range(3)] + [[0, len(records)]]:
        _, outs = run_split(cfg, records, sym, cuts, NAMES, flush=False)
        got = [(p.rule, p.value, p.ts_event, p.symbol, p.price) for out in outs for _, p in out
               if isinstance(p, Anomaly)]
        assert got == want
        assert all(p.threshold == k for out in outs for _, p in out if isinstance(p, Anomaly) and p.rule == "iqr")


def iqr_calc(window: int, k: float) -> CalculatorSet:
    cfg = config(sma=(), ema=(), jump=None, window=2, threshold=1e9, iqr=IQRConfig(window=window, k=k))
    calc = CalculatorSet(cfg, src="t", live=False)
    calc.add_symbol("AAPL")
    return calc


@pytest.mark.parametrize(("window", "prices", "flagged"), [
    (4, [10.0, 10.01, 10.02, 10.03, 11.0], [5]),  # the first trade with `window` trades before it is checked
    (4, [10.0, 10.01, 10.02, 15.0], []),  # no flag until the window is full
    (4, [10.0, 10.01, 10.02, 10.03, 10.0525], []),  # exactly on the fence Q3 + k*IQR: inside
    (4, [10.0, 10.01, 10.02, 10.03, 10.052500001], [5]),  # just beyond it
    (4, [10.0, 10.01, 10.02, 10.03, 9.9775], []),  # exactly on Q1 - k*IQR
    (4, [10.0, 10.01, 10.02, 10.03, 9.977499999], [5]),
    (4, [10.0, 10.0, 10.0, 10.0, 10.01, 9.0], [6]),  # Q3 of [10, 10, 10, 10.01] is 10.0025: IQR > 0
    (5, [10.0, 10.0, 10.0, 10.0, 10.01, 9.0, 12.0], []),  # Q1 = Q3 = 10: IQR 0 never flags
])
def test_iqr_fences_and_warm_up(window, prices, flagged):
    """k 2: after 10.00..10.03 (window 4), Q1 = 10.0075 and Q3 = 10.0225, so the fences are
    [9.9775, 10.0525]."""
    calc = iqr_calc(window, 2.0)
    out = calc.on_batch(trades(prices), np.zeros(len(prices), dtype=np.int32)).decode()
    assert [p.ts_event for _, p in out if isinstance(p, Anomaly)] == flagged


def test_iqr_payload_names_the_fences():
    calc = iqr_calc(4, 1.5)
    out = calc.on_batch(trades([10.0, 10.01, 10.02, 10.03, 11.0]), np.zeros(5, dtype=np.int32)).decode()
    (topic, anomaly), = [(t, p) for t, p in out if isinstance(p, Anomaly)]
    q1, q3 = np.quantile(np.array([10_000_000_000, 10_010_000_000, 10_020_000_000, 10_030_000_000]), [0.25, 0.75])
    assert (topic, anomaly.rule, anomaly.price, anomaly.threshold, anomaly.ts_event) == (
        "anomaly.AAPL", "iqr", 11.0, 1.5, 5)
    assert anomaly.value == (11_000_000_000 - q3) / (q3 - q1)  # IQRs above Q3: 65.17
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(anomaly), type=Anomaly) == anomaly  # the wire knows `iqr`
    assert anomaly.detail == ("price 11 is outside [9.985, 10.045] = [Q1 - 1.5*IQR, Q3 + 1.5*IQR] of the "
                              "previous 4 trades (Q1 10.0075, Q3 10.0225); +65.17 IQR beyond the quartile")


def test_iqr_is_off_by_default_and_takes_defaults_from_an_empty_mapping():
    assert CalculatorsConfig().anomalies.iqr is None
    cfg = msgspec.yaml.decode(b"anomalies: {iqr: {}}", type=CalculatorsConfig)
    assert cfg.anomalies.iqr == IQRConfig(window=100, k=1.5)
    assert msgspec.yaml.decode(b"anomalies: {iqr: {window: 20, k: 3}}", type=CalculatorsConfig).anomalies.iqr == (
        IQRConfig(window=20, k=3.0))


@pytest.mark.parametrize(("iqr", "message"), [
    ("{window: 1}", "`calculators.anomalies.iqr.window` must be int >= 2; was 1"),
    ("{window: ten}", "`calculators.anomalies.iqr.window` must be int; was ten"),
    ("{k: 0}", "`calculators.anomalies.iqr.k` must be float > 0.0; was 0"),
    ("{k: -1.5}", "`calculators.anomalies.iqr.k` must be float > 0.0; was -1.5"),
    ("{window: 20, fence: 3}", "`calculators.anomalies.iqr.fence` is not a known field"),
    ("7", "`calculators.anomalies.iqr` must be object | null; was 7"),
])
def test_bad_iqr_settings_are_refused_naming_the_field(iqr, message):
    text = f"name: x\nfeeds:\n  - {{name: a, vendor: sim, symbols: [A]}}\ncalculators:\n  anomalies: {{iqr: {iqr}}}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert str(err.value).startswith(message)
