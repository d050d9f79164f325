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

import enum

import numba
import numpy as np

from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind, Side

__all__ = ["Refusal", "refusals", "refusal_of", "valid_records", "describe", "EARLIEST_NS", "LATEST_NS"]

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


class Refusal(enum.IntEnum):
    """Why a record may not be published (0: it may)."""

    OK = 0
    TIME = 1
    """``ts_event`` or ``ts_recv`` outside 1990..2200 (negative, zero, mis-scaled)."""
    SIDE = 2
    """An unknown side, or a book level without one, or a non-zero reserved byte."""
    PRICE = 3
    """A price that overflowed the fixed point, is undefined where one is needed, or is <= 0
    where the feed does not allow that."""
    SIZE = 4
    """A size that is negative, not finite, or zero on a trade."""
    KIND = 5
    """Not a trade, quote, book level, reset, correction or cancel."""


@numba.njit(cache=True, nogil=True)
def refusal_of(rec, allow_non_positive: bool) -> int:
    """The `Refusal` code of one record (a compiled function other kernels call per record)."""
    kind = rec.kind
    if not (EARLIEST_NS <= rec.ts_event < LATEST_NS and EARLIEST_NS <= rec.ts_recv < LATEST_NS):
        return 1
    if rec.side > Side.ASK or rec.reserved != 0 or (kind == Kind.BOOK and rec.side == Side.NONE):
        return 2
    if kind == Kind.TRADE or kind == Kind.BOOK or kind == Kind.CANCEL or kind == Kind.CORRECTION:
        # a book level of size 0 removes the level; a correction's price2 is the trade's new id
        if not _price_ok(rec.price, allow_non_positive):
            return 3
        if not _size_ok(rec.size, kind != Kind.BOOK) or (kind == Kind.CORRECTION and not _size_ok(rec.size2, True)):
            return 4
        return 0
    if kind == Kind.QUOTE:
        if not ((rec.price == UNDEF_PRICE or _price_ok(rec.price, True))
                and (rec.price2 == UNDEF_PRICE or _price_ok(rec.price2, True))):
            return 3
        if not (_size_ok(rec.size, False) and _size_ok(rec.size2, False)):
            return 4
        return 0
    return 0 if kind == Kind.RESET else 5


@numba.njit(cache=True, nogil=True)
def _refusals(batch: np.ndarray, allow_non_positive: bool, out: np.ndarray) -> int:
    bad = 0
    for i in range(batch.shape[0]):
        code = refusal_of(batch[i], allow_non_positive)
        out[i] = code
        bad += code != 0
    return bad


def refusals(batch: np.ndarray, *, allow_non_positive_prices: bool = False) -> tuple[np.ndarray, int]:
    """(a `Refusal` code per record, 0 where it may be published; how many may not)."""
    if batch.dtype != RECORD_DTYPE:
        raise TypeError(f"`batch` must have RECORD_DTYPE, was {batch.dtype}")
    codes = np.empty(len(batch), dtype=np.uint8)
    bad = _refusals(batch, allow_non_positive_prices, codes)
    return codes, int(bad)


def valid_records(batch: np.ndarray, *, allow_non_positive_prices: bool = False) -> tuple[np.ndarray, int]:
    """(boolean mask of the records that may be published, how many may not)."""
    codes, bad = refusals(batch, allow_non_positive_prices=allow_non_positive_prices)
    return codes == 0, bad


def describe(record: np.void) -> str:
    """One record as a line for an event or a log (field values as stored)."""
    return (f"kind {int(record['kind'])} instrument {int(record['instrument_id'])} "
            f"ts_event {int(record['ts_event'])} price {int(record['price'])} size {float(record['size'])!r} "
            f"side {int(record['side'])}")
