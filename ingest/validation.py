"""What may reach a ring: every record a vendor normalizes is checked here before routing.

A record with an impossible value (a price that overflowed the fixed point, a negative or zero
trade size, a non-finite size, a time outside 1990..2200, an unknown kind or side) is counted as
malformed by the feed loop and never published. One compiled pass over the batch, so the check
costs a few nanoseconds a record whatever the vendor.

Zero and negative prices are refused for trades and book levels unless the feed allows them
(``feeds[i].allow_negative_prices``: spreads and some commodity futures do trade at or below
zero); a quote side may be ``UNDEF_PRICE`` (empty).
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind, Side

__all__ = ["valid_records", "EARLIEST_NS", "LATEST_NS"]

EARLIEST_NS = 631_152_000_000_000_000
"""1990-01-01T00:00:00Z: no electronic tick data we ingest is older."""
LATEST_NS = 7_258_118_400_000_000_000
"""2200-01-01T00:00:00Z: a later time is a corrupted or mis-scaled timestamp."""

_PRICE_MIN = -UNDEF_PRICE + 1
"""Below this a price is int64 min or its neighbour: the sign of an overflowed conversion."""


@numba.njit(cache=True, nogil=True)
def _price_ok(price: int, allow_non_positive: bool) -> bool:
    if price == UNDEF_PRICE or price < _PRICE_MIN:
        return False
    return allow_non_positive or price > 0


@numba.njit(cache=True, nogil=True)
def _size_ok(size: float, positive: bool) -> bool:
    if not np.isfinite(size) or size < 0:
        return False
    return size > 0 or not positive


@numba.njit(cache=True, nogil=True)
def _mark_valid(batch: np.ndarray, allow_non_positive: bool, ok: np.ndarray) -> int:
    bad = 0
    for i in range(batch.shape[0]):
        rec = batch[i]
        good = (EARLIEST_NS <= rec.ts_event < LATEST_NS and EARLIEST_NS <= rec.ts_recv < LATEST_NS
                and rec.side <= Side.ASK and rec.reserved == 0)
        kind = rec.kind
        if not good:
            pass
        elif kind == Kind.TRADE:
            good = _price_ok(rec.price, allow_non_positive) and _size_ok(rec.size, True)
        elif kind == Kind.QUOTE:
            good = ((rec.price == UNDEF_PRICE or _price_ok(rec.price, True))
                    and (rec.price2 == UNDEF_PRICE or _price_ok(rec.price2, True))
                    and _size_ok(rec.size, False) and _size_ok(rec.size2, False))
        elif kind == Kind.BOOK:
            good = (rec.side != Side.NONE and _price_ok(rec.price, allow_non_positive)
                    and _size_ok(rec.size, False))
        elif kind != Kind.RESET:
            good = False
        ok[i] = good
        bad += not good
    return bad


def valid_records(batch: np.ndarray, *, allow_non_positive_prices: bool = False) -> tuple[np.ndarray, int]:
    """(boolean mask of the records that may be published, how many may not)."""
    if batch.dtype != RECORD_DTYPE:
        raise TypeError(f"`batch` must have RECORD_DTYPE, was {batch.dtype}")
    ok = np.empty(len(batch), dtype=np.bool_)
    bad = _mark_valid(batch, allow_non_positive_prices, ok)
    return ok, int(bad)
