"""The one record layout that crosses every ring.

Every market event (trade, top-of-book quote, price-level book update, book reset) is
normalized by an ingest process into one fixed 64-byte little-endian record, so rings can
move raw bytes and workers can view batches through a numpy structured dtype without
per-tick Python objects. `docs/records.md` documents the layout byte by byte.

Prices are int64 fixed point with scale 1e-9 (as in Databento's DBN): no float error
enters aggregation of OHLC. Sizes are float64 so crypto quantities fit; integer sizes up to
2**53 are exact.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "PRICE_SCALE",
    "UNDEF_PRICE",
    "Kind",
    "Side",
    "Flag",
    "empty",
    "join",
    "price_to_float",
    "float_to_price",
]

PRICE_SCALE = 1_000_000_000
"""Fixed-point scale of every price field: 1 unit = 1e-9."""

UNDEF_PRICE = np.iinfo(np.int64).max
"""Price sentinel for 'no price' (an empty side of a quote), as in DBN."""


class Kind(enum.IntEnum):
    """What a record is (byte 60)."""

    TRADE = 1
    """A trade: `price`, `size`, `side` = aggressor side."""
    QUOTE = 2
    """Top of book: `price`/`size` = bid, `price2`/`size2` = ask."""
    BOOK = 3
    """A price-level update: `side`, `price`, `size` (size 0 removes the level)."""
    RESET = 4
    """Clear the book (and quote state) of `instrument_id`."""
    CORRECTION = 5
    """The vendor corrected trade `sequence` (its id): `price`/`size` are the corrected trade,
    `price2` its new id (an integer, not a price), `size2` the original size."""
    CANCEL = 6
    """The vendor voided trade `sequence` (its id); `price`/`size` are the voided trade's."""


class Side(enum.IntEnum):
    """Side or aggressor side (byte 61)."""

    NONE = 0
    BID = 1
    """Bid side of a book; for a trade, a buyer-initiated trade."""
    ASK = 2
    """Ask side of a book; for a trade, a seller-initiated trade."""


class Flag(enum.IntFlag):
    """Bit flags (byte 62). Values follow DBN where DBN has the same meaning."""

    LAST = 0x80
    """Last record of a vendor packet/event: book state is consistent after it."""
    SNAPSHOT = 0x20
    """Part of a book snapshot (replay of existing state), not a live change."""
    BAD_TS_RECV = 0x08
    """The vendor marked the receive timestamp as unreliable."""


RECORD_DTYPE = np.dtype(
    [
        ("ts_event", "<i8"),  # 0   exchange/vendor event time, ns since the Unix epoch
        ("ts_recv", "<i8"),  # 8   time our ingest received it, ns since the Unix epoch
        ("price", "<i8"),  # 16  trade price / level price / bid price, fixed point 1e-9
        ("price2", "<i8"),  # 24  ask price (QUOTE only), fixed point 1e-9
        ("size", "<f8"),  # 32  trade size / level size / bid size
        ("size2", "<f8"),  # 40  ask size (QUOTE only)
        ("sequence", "<u8"),  # 48  vendor sequence number, 0 where the vendor has none
        ("instrument_id", "<u4"),  # 56  id from the feed's symbol registry
        ("kind", "u1"),  # 60  Kind
        ("side", "u1"),  # 61  Side
        ("flags", "u1"),  # 62  Flag bits
        ("reserved", "u1"),  # 63  zero
    ]
)
RECORD_SIZE = RECORD_DTYPE.itemsize
assert RECORD_SIZE == 64, RECORD_SIZE


def empty(n: int) -> np.ndarray:
    """A zeroed batch of `n` records."""
    return np.zeros(n, dtype=RECORD_DTYPE)


def join(parts: list[np.ndarray]) -> np.ndarray:
    """`parts` (record batches) as one batch: the first itself when it is the only one, else one
    copy made as raw bytes (numpy copies a structured array field by field, about 15x slower)."""
    if len(parts) == 1:
        return parts[0]
    words = [np.ascontiguousarray(part).view(np.uint64) for part in parts]
    return np.concatenate(words).view(RECORD_DTYPE)


def price_to_float(price: np.ndarray | int) -> np.ndarray | float:
    """Fixed-point price(s) to float: the correctly rounded quotient `price / 1e9`.

    Division (not multiplication by 1e-9, which is itself inexact) is the documented
    conversion, so every language gets the same float from the same integer.
    """
    return np.asarray(price, dtype=np.int64) / PRICE_SCALE if isinstance(price, np.ndarray) else price / PRICE_SCALE


_OVERFLOWED = np.iinfo(np.int64).min
"""What a price the fixed point cannot hold (NaN, infinite, beyond +-9.22e9) becomes: the
validation screen refuses it. Said explicitly, since the float-to-int cast of such a value is
undefined (int64 min on x86-64, but saturated to `UNDEF_PRICE`, an empty quote side, on ARM)."""
_PRICE_LIMIT = 2.0**63 / PRICE_SCALE


def float_to_price(value: np.ndarray | float) -> np.ndarray | int:
    """Float price(s) to fixed point, rounding to the nearest 1e-9 (see `_OVERFLOWED`)."""
    if isinstance(value, np.ndarray):
        fits = np.abs(value) < _PRICE_LIMIT  # False for NaN
        return np.where(fits, np.rint(np.where(fits, value, 0.0) * PRICE_SCALE), _OVERFLOWED).astype(np.int64)
    return int(round(value * PRICE_SCALE)) if abs(value) < _PRICE_LIMIT else int(_OVERFLOWED)
