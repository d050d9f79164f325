"""Screen a batch for the rings: each record's refusal code and, for those accepted, its ring,
in one compiled pass.

The feed loop screens every batch a vendor hands over; at live rates a batch is a few records,
so the Python around the check (a validation call, then a cast, a compare, two selects, a
gather and a count for the routing) was most of the feed's CPU per batch, whatever the vendor.
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.ingest.validation import refusal_of
from streamctl.shm.records import RECORD_DTYPE

__all__ = ["screen", "warm_up"]


@numba.njit(cache=True, nogil=True)
def _screen(batch: np.ndarray, allow_non_positive: bool, ring_of: np.ndarray,
            codes: np.ndarray, rings: np.ndarray) -> tuple[int, int]:
    bad = 0
    unknown = 0
    known = ring_of.shape[0]
    for i in range(batch.shape[0]):
        rec = batch[i]
        code = refusal_of(rec, allow_non_positive)
        codes[i] = code
        if code != 0:
            bad += 1
            continue
        instrument = rec.instrument_id
        ring = ring_of[instrument] if instrument < known else -1
        rings[i - bad] = ring
        unknown += ring == -1
    return bad, unknown


def screen(batch: np.ndarray, ring_of: np.ndarray, *,
           allow_non_positive_prices: bool = False) -> tuple[np.ndarray, int, np.ndarray, int]:
    """(a `Refusal` code per record, 0 where it may be published; how many may not; the ring
    index of each accepted record, in order, from `ring_of` indexed by instrument id, -1 past
    its end; how many accepted records are -1, i.e. of no known instrument)."""
    if batch.dtype != RECORD_DTYPE:
        raise TypeError(f"`batch` must have RECORD_DTYPE, was {batch.dtype}")
    codes = np.empty(len(batch), dtype=np.uint8)
    rings = np.empty(len(batch), dtype=np.int64)
    bad, unknown = _screen(batch, allow_non_positive_prices, ring_of, codes, rings)
    return codes, bad, rings[: len(batch) - bad], unknown


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel in the forkserver (`cli/preload`), so no feed
    loads it itself."""
    screen(np.zeros(1, RECORD_DTYPE), np.full(1, -1, np.int64))
