"""CalculatorSet as the worker uses it: symbols, output order, bad input, growth, wire encoding."""

from __future__ import annotations

import logging
from collections import defaultdict

import msgpack
import msgspec
import numpy as np
import pytest
from _calcref import asdicts, frame, make_trades, ref_time_bars
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.bus.wire import PAYLOAD_TYPES, parse_topic
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import (
    AnomalyConfig,
    BarsConfig,
    BookConfig,
    CalculatorsConfig,
    IQRConfig,
    VwapConfig,
    ZScoreConfig,
)
from streamctl.process.calc.trade_kernels import add128, mul64, mul128_64, sub128, to_float
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Flag, Kind, Side

SEC = 1_000_000_000
BASE = 1_700_000_040 * SEC


def rec(kind, ts, price=0.0, size=1.0, *, price2=0.0, side=Side.NONE) -> np.ndarray:
    r = np.zeros(1, dtype=RECORD_DTYPE)
    r["kind"], r["ts_event"], r["ts_recv"], r["side"] = kind, ts, ts + 3, side
    r["flags"] = Flag.LAST  # each record here is a whole event
    r["price"] = price if isinstance(price, int) else round(price * 1e9)
    r["price2"] = round(price2 * 1e9)
    r["size"] = size
    return r


def test_add_symbol_is_dense_and_idempotent_and_rejects_bad_names():
    calc = CalculatorSet(CalculatorsConfig(), src="t", live=False)
    assert [calc.add_symbol(s) for s in ["A", "B", "A", "C", "B"]] == [0, 1, 0, 2, 1]
    assert calc.symbols == ["A", "B", "C"]
    with pytest.raises(ValueError, match="`symbol` must be a non-empty ASCII string without NUL; was 'É'"):
        calc.add_symbol("É")


def test_output_order_is_bars_anomalies_vwap_sma_ema_books():
    cfg = CalculatorsConfig(bars=BarsConfig(time=["1s"], ticks=[2]), vwap=VwapConfig(rolling_window=3),
                            sma=[1], ema=[2], book=BookConfig(depth=2),
                            anomalies=AnomalyConfig(zscore=None, jump_pct=5.0, crossed_quotes=True))
    calc = CalculatorSet(cfg, src="t", live=False)
    for s in ("A", "B"):
        calc.add_symbol(s)
    calc.on_batch(np.concatenate([rec(Kind.TRADE, BASE, 10.0), rec(Kind.TRADE, BASE + 1, 10.0)]),
                  np.array([1, 0], dtype=np.int32))
    batch = np.concatenate([
        rec(Kind.BOOK, BASE + SEC, 9.0, 3.0, side=Side.BID),          # B's book
        rec(Kind.TRADE, BASE + SEC, 12.0),                             # B: closes 1s bar and 2t bar, jumps 20%
        rec(Kind.QUOTE, BASE + SEC, 10.0, price2=9.0),                 # A: crossed
        rec(Kind.TRADE, BASE + SEC + 1, 10.0),                         # A: closes its 1s and 2t bars
    ])
    out = calc.on_batch(batch, np.array([1, 1, 0, 0], dtype=np.int32)).decode()
    assert [t for t, _ in out] == [
        "bar.1s.B", "bar.2t.B", "bar.1s.A", "bar.2t.A",
        "anomaly.B", "anomaly.A",
        "vwap.A", "vwap.B", "sma.1.A", "sma.1.B", "ema.2.A", "ema.2.B",
        "book.B",
    ]
    assert [p.rule for t, p in out if parse_topic(t).kind == "anomaly"] == ["jump", "crossed"]


def test_bad_records_are_counted_skipped_and_logged_once(caplog):
    calc = CalculatorSet(CalculatorsConfig(bars=BarsConfig(ticks=[2]), book=BookConfig()), src="w-9", live=False)
    calc.add_symbol("A")
    bad_trades = [rec(Kind.TRADE, BASE, UNDEF_PRICE), rec(Kind.TRADE, BASE, 1.0, 0.0),
                  rec(Kind.TRADE, BASE, 1.0, float("nan")), rec(Kind.TRADE, BASE, 1.0, -2.0),
                  rec(Kind.TRADE, BASE, 1.0, float("inf")), rec(Kind.TRADE, 0, 1.0)]
    good = [rec(Kind.TRADE, BASE + i, 5.0 + i) for i in range(2)]
    batch = np.concatenate([bad_trades[0], good[0], *bad_trades[1:], rec(9, BASE), rec(Kind.TRADE, BASE, 1.0),
                            rec(Kind.BOOK, BASE, 1.0, -1.0, side=Side.BID), good[1]])
    sym = np.zeros(len(batch), dtype=np.int32)
    sym[-3] = 7  # unknown local symbol index: a bad record too
    with caplog.at_level(logging.WARNING, logger="streamctl.calc"):
        out = calc.on_batch(batch, sym).decode()
        calc.on_batch(batch, sym)
    [(topic, bar)] = out[:1]
    assert (topic, bar.open, bar.close, bar.trades) == ("bar.2t.A", 5.0, 6.0, 2)
    c = calc.counters
    assert (c["bad_trades"], c["bad_records"], c["bad_book"], c["trades"]) == (12, 4, 2, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert any("w-9: skipping bad trades" in m and "symbol `A`" in m and f"price `{UNDEF_PRICE}`" in m
               for m in messages)
    assert any("bad records" in m and "row 7: kind `9`" in m for m in messages)


def test_state_grows_with_symbols_added_mid_stream():
    records, sym = make_trades(3000, symbols=40, seed=4)
    names = [f"S{i:02d}" for i in range(40)]
    calc = CalculatorSet(CalculatorsConfig(bars=BarsConfig(time=["1s"]), vwap=None, anomalies=None, book=None),
                         src="t", live=False)
    outs = []
    for a in range(0, len(records), 250):
        for s in np.unique(sym[a:a + 250]):  # symbols appear as the worker meets them
            calc.add_symbol(names[s])
        local = np.array([calc.add_symbol(names[s]) for s in sym[a:a + 250]], dtype=np.int32)
        outs += calc.on_batch(records[a:a + 250], local).decode()
    outs += calc.flush().decode()
    got = defaultdict(list)
    for (topic, _), d in zip(outs, asdicts(outs), strict=True):
        got[topic].append(d)
    expected, _ = ref_time_bars(frame(records, sym), 1, names)
    assert dict(got) == expected


def test_batches_of_any_layout_and_size():
    calc = CalculatorSet(CalculatorsConfig(bars=BarsConfig(ticks=[2])), src="t", live=False)
    calc.add_symbol("A")
    assert calc.on_batch(np.zeros(0, dtype=RECORD_DTYPE), np.zeros(0, dtype=np.int32)).decode() == []
    batch = np.concatenate([rec(Kind.TRADE, BASE + i, 1.0 + i) for i in range(8)])
    out = calc.on_batch(batch[::2], np.zeros(4, dtype=np.int64)).decode()  # strided view, int64 indices
    assert [b.close for t, b in out if parse_topic(t).kind == "bar"] == [3.0, 7.0]
    with pytest.raises(TypeError, match="`records` must be a numpy array of RECORD_DTYPE"):
        calc.on_batch(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match=r"`sym_idx` must have one entry per record \(2\); was 1"):
        calc.on_batch(batch[:2], np.zeros(1, dtype=np.int32))


def test_payloads_encode_to_plain_msgpack_maps_of_their_topic_kind():
    cfg = CalculatorsConfig(bars=BarsConfig(ticks=[3]), sma=[2], ema=[2], book=BookConfig(depth=3),
                            anomalies=AnomalyConfig(zscore=ZScoreConfig(window=2, threshold=0.5), jump_pct=1.0,
                                                    iqr=IQRConfig(window=2, k=0.5)))
    calc = CalculatorSet(cfg, src="t", live=False)
    calc.add_symbol("BRK.B")
    batch = np.concatenate([rec(Kind.TRADE, BASE + i, p) for i, p in enumerate([10.0, 10.5, 10.0, 11.0])]
                           + [rec(Kind.BOOK, BASE + 9, 10.5, 2.0, side=Side.ASK)])
    messages = calc.on_batch(batch, np.zeros(len(batch), dtype=np.int32))
    kinds = set()
    seqs: dict[str, int] = {}
    for topic, data in messages:
        kind, _, name = parse_topic(topic)
        kinds.add(kind)
        decoded = msgpack.unpackb(data)  # a stock decoder
        seqs[topic] = seqs.get(topic, 0) + 1
        assert name == "BRK.B" and decoded["symbol"] == "BRK.B"
        assert decoded["seq"] == seqs[topic] and decoded["src"] == "t"  # numbered per topic, stamped
        payload = msgspec.msgpack.decode(data, type=PAYLOAD_TYPES[kind])  # typed
        assert msgspec.msgpack.encode(payload) == data
    assert kinds == {"bar", "anomaly", "vwap", "sma", "ema", "book"}
    assert {p.rule for t, p in messages.decode() if parse_topic(t).kind == "anomaly"} == {"zscore", "jump", "iqr"}


U128 = st.integers(min_value=0, max_value=(1 << 127) - 1)
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
M = (1 << 64) - 1


def split(v: int) -> tuple[np.uint64, np.uint64]:
    return np.uint64(v >> 64), np.uint64(v & M)


def join(hi, lo) -> int:
    return (int(hi) << 64) | int(lo)


@settings(max_examples=300, deadline=None)
@given(U64, U64, U128, U128, st.integers(min_value=1, max_value=1 << 20))
def test_int128_helpers_match_python_integers(a, b, x, y, w):
    assert join(*mul64(np.uint64(a), np.uint64(b))) == a * b
    big, small = max(x, y), min(x, y)
    assert join(*add128(*split(big >> 1), *split(small >> 1))) == (big >> 1) + (small >> 1)
    assert join(*sub128(*split(big), *split(small))) == big - small
    assert join(*mul128_64(*split(x >> 21), np.uint64(w))) == (x >> 21) * w
    assert to_float(*split(x)) == float(x)


@pytest.mark.parametrize("value", [(1 << 64) + (1 << 11), (1 << 64) + (1 << 11) + 1, (1 << 65) + (3 << 12),
                                   (1 << 127) - 1, (1 << 53) + 1, 2**64 - 1])
def test_int128_to_float_rounds_ties_to_even_like_python(value):
    assert to_float(*split(value)) == float(value)


def test_warm_up_compiles_every_kernel_and_read_only_batches_work():
    from streamctl.process.calc.engine import warm_up

    assert warm_up() >= 0.0
    calc = CalculatorSet(CalculatorsConfig(bars=BarsConfig(ticks=[2])), src="t", live=False)
    calc.add_symbol("A")
    batch = np.concatenate([rec(Kind.TRADE, BASE + i, 1.0 + i) for i in range(4)])
    sym = np.zeros(4, dtype=np.int32)
    batch.flags.writeable = False
    sym.flags.writeable = False
    out = calc.on_batch(batch, sym).decode()
    assert [b.close for t, b in out if parse_topic(t).kind == "bar"] == [2.0, 4.0]
