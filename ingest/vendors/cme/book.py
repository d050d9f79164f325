"""CME market-by-price books: level-indexed updates (MDPriceLevel) turned into our price-keyed
`Kind.BOOK` records.

CME addresses a level by its position: New inserts at a level and pushes the rest down (the
level pushed past the book's depth is gone), Delete removes one and pulls the rest up,
DeleteThru clears a side, DeleteFrom removes the top N levels, Overlay replaces a level. Our
record says "price P now has size S" (0 removes it), so each operation is translated into the
prices whose size changed.
"""

from __future__ import annotations

from streamctl.shm.records import Side

__all__ = ["LevelBook", "NEW", "CHANGE", "DELETE", "DELETE_THRU", "DELETE_FROM", "OVERLAY", "ENTRY_SIDES"]

NEW, CHANGE, DELETE, DELETE_THRU, DELETE_FROM, OVERLAY = range(6)
"""MDUpdateAction values."""

ENTRY_SIDES: dict[bytes, tuple[int, bool]] = {
    b"0": (Side.BID, False), b"1": (Side.ASK, False), b"E": (Side.BID, True), b"F": (Side.ASK, True)}
"""MDEntryType -> (side, implied)."""

Change = tuple[int, int, float]
"""(side, price 1e-9, new size; 0 = the level is gone)."""


class LevelBook:
    """One instrument's outright and implied books, each side a list of ``[price, size]`` best first.

    With ``merge_implied`` a price's published size is outright plus implied; otherwise implied
    levels are kept (so their level indices stay right) but never published.
    """

    def __init__(self, depth: int = 10, *, merge_implied: bool = False):
        self.depth = depth
        self.merge_implied = merge_implied
        self.levels: dict[tuple[int, bool], list[list[int]]] = {
            (int(s), i): [] for s in (Side.BID, Side.ASK) for i in (False, True)}

    def size_at(self, side: int, price: int) -> int:
        """The published size at `price` on `side`."""
        total = sum(size for p, size in self.levels[(side, False)] if p == price)
        if self.merge_implied:
            total += sum(size for p, size in self.levels[(side, True)] if p == price)
        return total

    def apply(self, action: int, side: int, implied: bool, level: int, price: int, size: int) -> list[Change] | None:
        """Apply one MD entry; the published changes, or None if the entry does not fit the book
        (a level past the depth or past the side's end), which the caller counts."""
        book = self.levels[(side, implied)]
        i = level - 1
        touched: list[int] = []
        if action == NEW:
            if not 0 <= i <= len(book) or i >= self.depth:
                return None
            book.insert(i, [price, size])
            touched.append(price)
            if len(book) > self.depth:
                touched.append(book.pop()[0])
        elif action in (CHANGE, OVERLAY):
            if not 0 <= i < len(book):
                return None
            touched.append(book[i][0])
            book[i] = [price, size]
            touched.append(price)
        elif action == DELETE:
            if not 0 <= i < len(book):
                return None
            touched.append(book.pop(i)[0])
        elif action == DELETE_THRU:
            touched.extend(p for p, _ in book)
            book.clear()
        elif action == DELETE_FROM:
            touched.extend(p for p, _ in book[:level])
            del book[:level]
        else:
            return None
        if implied and not self.merge_implied:
            return []
        if not self.merge_implied:  # outright prices are unique on a side: read the size off the list
            sizes = {p: s for p, s in book}
            return [(side, p, float(sizes.get(p, 0))) for p in dict.fromkeys(touched)]
        return [(side, p, float(self.size_at(side, p))) for p in dict.fromkeys(touched)]

    def clear(self) -> None:
        for book in self.levels.values():
            book.clear()

    def published(self) -> list[Change]:
        """Every published level (for a rebuilt book)."""
        out: list[Change] = []
        for side in (Side.BID, Side.ASK):
            prices = [p for p, _ in self.levels[(side, False)]]
            if self.merge_implied:
                prices += [p for p, _ in self.levels[(side, True)]]
            out.extend((side, p, float(self.size_at(side, p))) for p in dict.fromkeys(prices))
        return out
