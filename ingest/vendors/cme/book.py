"""CME market-by-price vocabulary: the MDUpdateAction values and what each MDEntryType of a book
entry means.

CME addresses a level by its position: New inserts at a level and pushes the rest down (the
level pushed past the book's depth is gone), Delete removes one and pulls the rest up,
DeleteThru clears a side, DeleteFrom removes the top N levels, Overlay replaces a level. The
channel's kernel (`streamctl.ingest.vendors.cme.channel_kernels`) turns each into the prices
whose size changed; the synthetic generator and the venue speak the same values.
"""

from __future__ import annotations

from streamctl.shm.records import Side

__all__ = ["NEW", "CHANGE", "DELETE", "DELETE_THRU", "DELETE_FROM", "OVERLAY", "ENTRY_SIDES"]

NEW, CHANGE, DELETE, DELETE_THRU, DELETE_FROM, OVERLAY = range(6)
"""MDUpdateAction values."""

ENTRY_SIDES: dict[bytes, tuple[int, bool]] = {
    b"0": (Side.BID, False), b"1": (Side.ASK, False), b"E": (Side.BID, True), b"F": (Side.ASK, True)}
"""MDEntryType -> (side, implied)."""
