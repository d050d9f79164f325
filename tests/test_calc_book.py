"""The level book against a dict-based reference, under random batch splits and level growth."""

from __future__ import annotations

import numpy as np
import pytest
from _calcref import random_splits, ref_books, run_split

from streamctl.bus.wire import Book
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import BookConfig, CalculatorsConfig
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Flag, Kind, Side

NAMES = ["ESZ4", "NQZ4", "BTC-USD"]


def book_config(depth: int) -> CalculatorsConfig:
    return CalculatorsConfig(vwap=None, anomalies=None, book=BookConfig(depth=depth))


def make_book_records(n: int, seed: int, *, levels: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Random level updates around 100.00 (sizes 0 remove, some fractional), a few resets,
    trades and quotes mixed in (they must not touch the book), and some bad book records."""
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    sym = rng.integers(0, len(NAMES), n).astype(np.int32)
    rec["ts_event"] = 1_000 + np.arange(n)
    rec["ts_recv"] = rec["ts_event"] + 7
    side = rng.choice([Side.BID, Side.ASK], n)
    offset = rng.integers(0, levels, n)
    rec["side"] = side
    rec["price"] = np.where(side == Side.BID, 10_000 - offset, 10_001 + offset) * 10_000_000
    rec["size"] = np.where(rng.random(n) < 0.3, 0.0, rng.integers(1, 50, n) + np.where(rng.random(n) < 0.2, 0.25, 0))
    kind = np.full(n, Kind.BOOK)
    draw = rng.random(n)
    kind[draw < 0.002] = Kind.RESET
    kind[(draw > 0.97) & (draw < 0.985)] = Kind.TRADE
    kind[draw >= 0.985] = Kind.QUOTE
    rec["kind"] = kind
    rec["flags"] = Flag.LAST  # one record per event here; multi-record events are tested below
    rec["price2"] = rec["price"] + 10_000_000
    rec["size"][kind == Kind.TRADE] = 1.0
    bad = rng.random(n) < 0.003
    rec["side"][bad & (kind == Kind.BOOK) & (rng.random(n) < 0.5)] = Side.NONE
    rec["price"][bad & (kind == Kind.BOOK) & (rec["side"] != Side.NONE)] = UNDEF_PRICE
    return rec, sym


def state_after(records, sym, end: int, depth: int) -> dict[int, tuple[list, list]]:
    return ref_books(records[:end], sym[:end], depth)


@pytest.mark.parametrize("depth", [1, 10, 50])
def test_book_matches_reference_after_every_batch(depth):
    records, sym = make_book_records(6000, seed=depth)
    rng = np.random.default_rng(depth)
    for cuts in (random_splits(len(records), rng, max_batch=900), [0, len(records)]):
        calc, outs = run_split(book_config(depth), records, sym, cuts, NAMES, flush=False)
        for (a, b), out in zip(zip(cuts, cuts[1:], strict=False), outs, strict=True):
            books = [(t, p) for t, p in out if isinstance(p, Book)]
            changed = {int(s) for s, k in zip(sym[a:b], records["kind"][a:b], strict=True)
                       if k in (Kind.BOOK, Kind.RESET)}
            expected = state_after(records, sym, b, depth)
            published = {NAMES.index(p.symbol): p for _, p in books}
            assert [t for t, _ in books] == [f"book.{NAMES[s]}" for s in sorted(published)]
            assert set(published) <= changed
            sets = {int(s) for s, k, side, price, size in zip(
                sym[a:b], records["kind"][a:b], records["side"][a:b], records["price"][a:b], records["size"][a:b],
                strict=True) if k == Kind.RESET or (k == Kind.BOOK and side != Side.NONE and price != UNDEF_PRICE
                                                   and size > 0)}
            assert sets <= set(published)
            for s, p in published.items():
                assert (p.bids, p.asks) == (list(expected[s][0]), list(expected[s][1]))
                assert p.depth == depth
        assert calc.counters["bad_book"] > 0
        assert calc.counters["book_missing_level"] > 0
        assert calc.counters["resets"] > 0
        assert calc._book.levels >= 128  # grew past the initial 64 levels per side


def test_reset_clears_only_its_symbol_and_publishes_an_empty_book():
    calc = CalculatorSet(book_config(5), src="t", live=False)
    for name in NAMES[:2]:
        calc.add_symbol(name)
    rec = np.zeros(4, dtype=RECORD_DTYPE)
    rec["kind"] = [Kind.BOOK, Kind.BOOK, Kind.BOOK, Kind.RESET]
    rec["side"] = [Side.BID, Side.ASK, Side.BID, Side.NONE]
    rec["price"] = [99_000_000_000, 101_000_000_000, 98_000_000_000, 0]
    rec["size"] = [5, 6, 7, 0]
    rec["ts_event"] = [1, 2, 3, 4]
    rec["flags"] = Flag.LAST
    out = calc.on_batch(rec, np.array([0, 0, 1, 0], dtype=np.int32)).decode()
    assert [(t, p.bids, p.asks, p.ts_event) for t, p in out] == [
        ("book.ESZ4", [], [], 4), ("book.NQZ4", [(98.0, 7.0)], [], 3)]


def test_a_book_is_published_only_when_its_event_is_complete():
    """A vendor event that moves an order writes two levels (old level, new level) and flags
    only the second LAST; a batch that ends between them must not publish the half-moved book."""
    calc = CalculatorSet(book_config(5), src="t", live=False)
    for name in NAMES[:2]:
        calc.add_symbol(name)
    rec = np.zeros(5, dtype=RECORD_DTYPE)
    rec["kind"] = Kind.BOOK
    rec["side"] = [Side.ASK, Side.ASK, Side.ASK, Side.BID, Side.ASK]
    rec["price"] = [101_000_000_000, 101_000_000_000, 102_000_000_000, 99_000_000_000, 103_000_000_000]
    rec["size"] = [10, 6, 4, 5, 1]  # event 2: 4 lots move from 101 to 102 (two records)
    rec["flags"] = [Flag.LAST, 0, Flag.LAST, Flag.LAST, 0]
    rec["ts_event"] = [1, 2, 2, 3, 4]
    sym = np.array([0, 0, 0, 1, 0], dtype=np.int32)
    first = calc.on_batch(rec[:2], sym[:2]).decode()  # ends inside event 2: ESZ4 is mid-event
    assert first == []
    second = calc.on_batch(rec[2:4], sym[2:4]).decode()  # completes it; NQZ4's one-record event too
    assert [(t, p.asks, p.ts_event) for t, p in second] == [
        ("book.ESZ4", [(101.0, 6.0), (102.0, 4.0)], 2), ("book.NQZ4", [], 3)]
    assert calc.on_batch(rec[4:], sym[4:]).decode() == []  # an event left open is held back, not published
