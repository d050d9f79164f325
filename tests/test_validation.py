"""The record check before the rings, against a plainly written per-record reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.ingest.validation import EARLIEST_NS, LATEST_NS, valid_records
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind

INT64_MIN = -(2**63)
NOW = 1_700_000_000_000_000_000


def reference(rec, allow_non_positive: bool) -> bool:
    def price_ok(p, any_sign):
        return p != UNDEF_PRICE and p > INT64_MIN + 1 and (any_sign or p > 0)

    def size_ok(s, positive):
        return math.isfinite(s) and (s > 0 if positive else s >= 0)

    if not (EARLIEST_NS <= rec["ts_event"] < LATEST_NS and EARLIEST_NS <= rec["ts_recv"] < LATEST_NS):
        return False
    if rec["side"] > 2 or rec["reserved"] != 0:
        return False
    kind = rec["kind"]
    if kind == Kind.TRADE:
        return price_ok(rec["price"], allow_non_positive) and size_ok(rec["size"], True)
    if kind == Kind.QUOTE:
        return all(p == UNDEF_PRICE or price_ok(p, True) for p in (rec["price"], rec["price2"])) and \
            size_ok(rec["size"], False) and size_ok(rec["size2"], False)
    if kind == Kind.BOOK:
        return rec["side"] != 0 and price_ok(rec["price"], allow_non_positive) and size_ok(rec["size"], False)
    if kind == Kind.CANCEL:  # the voided trade, as it was
        return price_ok(rec["price"], allow_non_positive) and size_ok(rec["size"], True)
    if kind == Kind.CORRECTION:  # the corrected trade, and the original size; price2 is an id
        return price_ok(rec["price"], allow_non_positive) and size_ok(rec["size"], True) and size_ok(rec["size2"], True)
    return kind == Kind.RESET


PRICES = st.sampled_from([10**9, 5_528_500_000_000, 0, -10**9, UNDEF_PRICE, INT64_MIN, INT64_MIN + 1,
                          INT64_MIN + 2, 1]) | st.integers(INT64_MIN, UNDEF_PRICE)
SIZES = st.sampled_from([1.0, 0.0, -5.0, 0.001, math.nan, math.inf, -math.inf, 1e300])
TIMES = st.sampled_from([NOW, -1, 0, EARLIEST_NS, EARLIEST_NS - 1, LATEST_NS, LATEST_NS - 1, 2**63 - 1])
RECORD = st.tuples(TIMES, TIMES, PRICES, PRICES, SIZES, SIZES, st.integers(0, 7), st.integers(0, 3),
                   st.sampled_from([0, 0, 0, 1]))


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(rows=st.lists(RECORD, max_size=40), allow=st.booleans())
def test_matches_the_reference(rows, allow):
    batch = np.zeros(len(rows), RECORD_DTYPE)
    for i, (te, tr, p, p2, s, s2, kind, side, reserved) in enumerate(rows):
        batch[i] = (te, tr, p, p2, s, s2, 0, 1, kind, side, 0, reserved)
    ok, bad = valid_records(batch, allow_non_positive_prices=allow)
    assert ok.tolist() == [reference(r, allow) for r in batch]
    assert bad == len(rows) - int(ok.sum())


def _trades(n: int) -> np.ndarray:
    batch = np.zeros(n, RECORD_DTYPE)
    batch["ts_event"] = batch["ts_recv"] = NOW
    batch["kind"] = Kind.TRADE
    batch["price"] = 10**9
    batch["size"] = 1
    return batch


def test_the_issue_reproductions_are_refused():
    batch = _trades(4)
    batch["price"][0] = INT64_MIN  # CSV price 1e20 after an overflowing conversion
    batch["ts_event"][1] = -1  # ts_event -1
    batch["size"][2] = -5  # size -5
    ok, bad = valid_records(batch)
    assert ok.tolist() == [False, False, False, True] and bad == 3


def test_refuses_another_layout():
    with pytest.raises(TypeError, match="`batch` must have RECORD_DTYPE"):
        valid_records(np.zeros(3, np.int64))


def test_each_refusal_names_its_reason():
    from streamctl.ingest.validation import Refusal, refusals

    batch = _trades(7)
    batch["ts_recv"][1] = 0
    batch["side"][2] = 7
    batch["price"][3] = -(10**9)
    batch["size"][4] = math.inf
    batch["kind"][5] = 42
    batch["kind"][6] = Kind.BOOK  # a level with no side
    codes, bad = refusals(batch)
    assert [Refusal(c) for c in codes] == [Refusal.OK, Refusal.TIME, Refusal.SIDE, Refusal.PRICE, Refusal.SIZE,
                                           Refusal.KIND, Refusal.SIDE]
    assert bad == 6
    assert refusals(batch[3:4], allow_non_positive_prices=True)[1] == 0
