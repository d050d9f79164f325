"""Bar revisions: a vendor's correction or cancel re-publishes the time bars it changes.

The reference is the calculators themselves run over the corrected trade list (the trade
voided, or its price and size changed): a revised bar must equal the bar that list gives,
field for field, and carry ``revision`` 1, 2 ...; a bar still open when corrected goes out
once, already corrected.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from _calcref import make_trades

from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import BarsConfig, CalculatorsConfig
from streamctl.shm.records import RECORD_DTYPE, Kind

NAMES = ["AAA", "BBB", "CCC"]


def _calc(**bars) -> CalculatorSet:
    config = CalculatorsConfig(bars=BarsConfig(**{"time": ["1s", "5s"], "ticks": [7], **bars}), vwap=None,
                               anomalies=None, book=None)
    calc = CalculatorSet(config, src="test", live=False)
    for name in NAMES:
        calc.add_symbol(name)
    return calc


def _trades(n: int = 3000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    records, sym = make_trades(n, symbols=len(NAMES), seed=seed, mean_gap_ns=20_000_000)
    records["sequence"] = np.arange(1, n + 1)  # the vendor's trade ids
    return records, sym


def _void(trade: np.ndarray, kind: Kind, *, price: int = 0, size: float = 0.0, new_id: int = 0) -> np.ndarray:
    rec = np.zeros(1, RECORD_DTYPE)
    rec["kind"] = kind
    rec["sequence"] = trade["sequence"]
    rec["ts_event"] = trade["ts_event"]
    rec["ts_recv"] = trade["ts_recv"]
    rec["price"] = price if kind == Kind.CORRECTION else trade["price"]
    rec["size"] = size if kind == Kind.CORRECTION else trade["size"]
    rec["price2"] = new_id
    return rec


def _bars(out, prefix: str = "bar.") -> list[dict]:
    """Bar fields by topic, numbering (``seq``, ``src``) aside: a revision is a later message."""
    return [msgspec.structs.asdict(p) | {"topic": t, "seq": 0, "src": ""} for t, p in out if t.startswith(prefix)]


def _key(bar: dict) -> tuple:
    return bar["topic"], bar["ts_start"]


def _run(records: np.ndarray, sym: np.ndarray, cuts: list[int], **bars) -> tuple[CalculatorSet, list]:
    calc = _calc(**bars)
    out: list = []
    for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True):
        out += calc.on_batch(records[a:b], sym[a:b]).decode()
    out += calc.flush().decode()
    return calc, out


def _late(records: np.ndarray, sym: np.ndarray, width: int) -> np.ndarray:
    """Per trade: whether its interval of `width` ns had closed when it came (a later trade of its
    symbol had opened a later interval), as docs/calculators.md defines late."""
    latest: dict[int, int] = {}
    out = np.zeros(len(records), bool)
    for i, (ts, s) in enumerate(zip(records["ts_event"].tolist(), sym.tolist(), strict=True)):
        start = ts - ts % width
        if start < latest.get(s, start):
            out[i] = True
        else:
            latest[s] = start
    return out


def _closed_trade(records: np.ndarray, sym: np.ndarray, before: int) -> int:
    """Row of an on-time trade whose 5 s interval closed well before row `before`."""
    limit = records["ts_event"][before] - 10_000_000_000
    rows = np.flatnonzero((records["ts_event"][:before] < limit) & (np.maximum.accumulate(records["ts_event"])[:before]
                                                                     == records["ts_event"][:before]))
    return int(rows[len(rows) // 2])


@pytest.mark.parametrize("kind", [Kind.CANCEL, Kind.CORRECTION])
def test_a_published_bar_is_republished_corrected_with_a_revision(kind):
    records, sym = _trades()
    at = 2000  # the correction arrives after this trade
    victim = _closed_trade(records, sym, at)
    new_price, new_size = int(records["price"][victim]) + 70_000_000, 3.0
    void = _void(records[victim], kind, price=new_price, size=new_size, new_id=99_999)
    stream = np.concatenate([records[:at], void, records[at:]])
    sym_stream = np.concatenate([sym[:at], sym[victim:victim + 1], sym[at:]])
    calc, out = _run(stream, sym_stream, [500, 1000, at + 1, 2500])

    corrected = records.copy()
    if kind == Kind.CANCEL:
        keep = np.ones(len(records), bool)
        keep[victim] = False
        corrected, csym = corrected[keep], sym[keep]
    else:
        corrected["price"][victim], corrected["size"][victim] = new_price, new_size
        csym = sym
    _, reference = _run(corrected, csym, [500, 1000, 2000, 2500])

    ours = _bars(out, "bar.")
    first = [b for b in ours if b["revision"] == 0]
    revised = [b for b in ours if b["revision"] > 0]
    name = NAMES[sym[victim]]
    assert sorted((b["topic"], b["revision"]) for b in revised) == [(f"bar.1s.{name}", 1), (f"bar.5s.{name}", 1)]
    ref_time = {_key(b): b for b in _bars(reference) if not b["topic"].startswith("bar.7t")}
    for bar in revised:
        assert {**bar, "revision": 0} == ref_time[_key(bar)]
        assert bar["ts_start"] <= records["ts_event"][victim] < bar["ts_end"]
    # every other time bar went out once, equal to the reference; the revised ones first went out as they were
    assert {_key(b): b for b in first if not b["topic"].startswith("bar.7t")}.keys() == ref_time.keys()
    changed = {_key(b) for b in revised}
    for bar in first:
        if not bar["topic"].startswith("bar.7t") and _key(bar) not in changed:
            assert bar == ref_time[_key(bar)]
    assert calc.counters["corrections"] == 1 and calc.counters["corrections_unmatched"] == 0
    assert calc.counters["bad_records"] == 0


def test_a_correction_of_an_open_bar_goes_out_once_already_corrected():
    records, sym = _trades(400)
    last = len(records) - 1
    void = _void(records[last], Kind.CORRECTION, price=int(records["price"][last]) - 30_000_000, size=9.0)
    _, out = _run(np.concatenate([records, void]), np.concatenate([sym, sym[last:]]), [200])
    corrected = records.copy()
    corrected["price"][last] -= 30_000_000
    corrected["size"][last] = 9.0
    _, reference = _run(corrected, sym, [200])
    time_bars = [b for b in _bars(out) if not b["topic"].startswith("bar.7t")]
    assert all(b["revision"] == 0 for b in time_bars)
    assert time_bars == [b for b in _bars(reference) if not b["topic"].startswith("bar.7t")]


def test_cancelling_every_trade_of_a_bar_republishes_it_empty():
    records, sym = _trades(600)
    start = records["ts_event"][50] - records["ts_event"][50] % 1_000_000_000
    s = sym[50]
    on_time = ~_late(records, sym, 1_000_000_000)[:300]
    in_bar = np.flatnonzero((sym[:300] == s) & (records["ts_event"][:300] >= start)
                            & (records["ts_event"][:300] < start + 1_000_000_000) & on_time)
    voids = np.concatenate([_void(records[i], Kind.CANCEL) for i in in_bar])
    calc, out = _run(np.concatenate([records[:300], voids, records[300:]]),
                     np.concatenate([sym[:300], np.full(len(in_bar), s, np.int32), sym[300:]]), [300])
    last = [b for b in _bars(out, f"bar.1s.{NAMES[s]}") if b["ts_start"] == start][-1]
    assert last["revision"] == len(in_bar) and last["trades"] == 0 and last["volume"] == 0.0
    assert math.isnan(last["open"]) and math.isnan(last["vwap"])


def test_unknown_trades_and_trades_out_of_the_window_are_counted_not_guessed():
    records, sym = _trades(600)
    stranger = records[10].copy()
    stranger["sequence"] = 10**9
    voids = np.concatenate([_void(stranger, Kind.CANCEL), _void(records[5], Kind.CANCEL)])
    calc, out = _run(np.concatenate([records, voids]), np.concatenate([sym, sym[10:11], sym[5:6]]), [300],
                     correction_window=100)  # trade 5 is long gone from a 100-trade window
    assert not [b for b in _bars(out) if b["revision"]]
    assert calc.counters["corrections_unmatched"] == 2 and calc.counters["corrections"] == 0


def test_a_late_trade_stays_out_of_the_rebuilt_bar():
    """A trade that came after its interval closed was never in that bar; the rebuild leaves it out."""
    records, sym = _trades(800, seed=5)
    width = 1_000_000_000
    is_late = _late(records, sym, width)
    late = np.flatnonzero(is_late)
    assert len(late), "the generator makes late trades"
    j = int(late[0])
    start = records["ts_event"][j] - records["ts_event"][j] % width
    s = sym[j]
    others = np.flatnonzero((sym[:j] == s) & (records["ts_event"][:j] >= start)
                            & (records["ts_event"][:j] < start + width) & ~is_late[:j])
    victim = int(others[0])
    stream = np.concatenate([records[:j + 1], _void(records[victim], Kind.CANCEL), records[j + 1:]])
    calc, out = _run(stream, np.concatenate([sym[:j + 1], sym[victim:victim + 1], sym[j + 1:]]), [])
    revised = [b for b in _bars(out, f"bar.1s.{NAMES[s]}") if b["revision"]]
    original = [b for b in _bars(out, f"bar.1s.{NAMES[s]}") if not b["revision"] and b["ts_start"] == start][0]
    assert len(revised) == 1 and revised[0]["trades"] == original["trades"] - 1 == len(others) - 1
    assert calc.counters["late"] >= 1
