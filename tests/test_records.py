"""`shm.records.join`: record batches joined as raw bytes, equal to numpy's field-by-field concatenation."""

from __future__ import annotations

import numpy as np

from streamctl.shm.records import RECORD_DTYPE, empty, join


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
