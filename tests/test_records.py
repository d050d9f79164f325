"""`shm.records.join`: record batches joined as raw bytes, equal to numpy's field-by-field concatenation."""

from __future__ import annotations

import warnings

import numpy as np

from streamctl.shm.records import RECORD_DTYPE, empty, float_to_price, join


def _batch(n: int, start: int) -> np.ndarray:
    batch = empty(n)
    batch["ts_event"] = np.arange(start, start + n)
    batch["price"] = np.arange(n) * 1_000_000_000
    batch["size"] = np.arange(n) / 3
    batch["instrument_id"] = start
    batch["kind"] = 1
    batch["flags"] = np.arange(n) % 256
    return batch


def test_join_equals_concatenate():
    parts = [_batch(5, 0), _batch(1, 100), _batch(4096, 7)]
    joined = join(parts)
    assert joined.dtype == RECORD_DTYPE
    assert joined.tobytes() == np.concatenate(parts).tobytes()


def test_join_of_one_batch_is_that_batch():
    part = _batch(3, 0)
    assert join([part]) is part


def test_join_copies_a_strided_view():
    base = _batch(10, 0)
    parts = [base[::2], base[1:3]]
    assert join(parts).tobytes() == np.concatenate(parts).tobytes()


def test_a_price_the_fixed_point_cannot_hold_is_int64_min_without_a_warning():
    """The cast used to be left to the platform: int64 min on x86-64 (with a RuntimeWarning),
    saturated to UNDEF_PRICE (an empty quote side, accepted) on ARM; the scalar form raised."""
    odd = np.array([np.nan, np.inf, -np.inf, 9.3e9, -9.3e9, 1.5, -2.25])
    low = np.iinfo(np.int64).min
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float_to_price(odd).tolist() == [low] * 5 + [1_500_000_000, -2_250_000_000]
        assert [float_to_price(float(v)) for v in odd] == [low] * 5 + [1_500_000_000, -2_250_000_000]
