"""Per-symbol state as preallocated numpy arrays that grow with the symbol count.

Every calculator keeps its state in arrays whose first axis is the local symbol index, so a
kernel updates state without a Python object per symbol or per tick. When `add_symbol`
passes the capacity, every array is reallocated at double the size, old rows copied, new
rows set to the array's initial value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SymbolArrays", "copy_into"]


def copy_into(array: np.ndarray, spare: np.ndarray | None) -> np.ndarray:
    """A copy of `array`, written into `spare` if it has the same shape and dtype. A checkpoint
    reuses its last one's arrays: copying into memory already touched costs a fraction of
    copying into fresh pages (page faults dominate a ~40 MB copy)."""
    if spare is not None and spare.shape == array.shape and spare.dtype == array.dtype:
        np.copyto(spare, array)
        return spare
    return array.copy()


class SymbolArrays:
    """A named set of arrays sharing a first axis of `capacity` symbols.

    >>> s = SymbolArrays(2)
    >>> price = s.add("price", (3,), np.int64, -1)
    >>> s.resize(4)
    >>> s["price"].shape
    (4, 3)
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"`capacity` must be >= 1; was {capacity}")
        self.capacity = capacity
        self._arrays: dict[str, np.ndarray] = {}
        self._fill: dict[str, object] = {}

    def add(self, name: str, tail: tuple[int, ...], dtype, fill) -> np.ndarray:
        """Register an array of shape ``(capacity, *tail)`` filled with `fill`."""
        if name in self._arrays:
            raise ValueError(f"state array `{name}` already exists")
        self._arrays[name] = np.full((self.capacity, *tail), fill, dtype=dtype)
        self._fill[name] = fill
        return self._arrays[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def resize(self, capacity: int) -> None:
        """Grow every array to `capacity` symbols (never shrinks)."""
        if capacity <= self.capacity:
            return
        for name, old in self._arrays.items():
            new = np.full((capacity, *old.shape[1:]), self._fill[name], dtype=old.dtype)
            new[: self.capacity] = old
            self._arrays[name] = new
        self.capacity = capacity

    def export(self, rows: int, into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Copies of the first `rows` rows of every array (a checkpoint's part), into the arrays
        of an earlier export `into` where they fit (see `copy_into`)."""
        into = into or {}
        return {name: copy_into(array[:rows], into.get(name)) for name, array in self._arrays.items()}

    def load(self, arrays: dict[str, np.ndarray], rows: int, *, grow: frozenset[str] = frozenset()) -> None:
        """Overwrite the first `rows` rows with `arrays` (from `export`); every array must be
        there with its dtype, `rows` rows and its trailing axes, which only the arrays named in
        `grow` (a book's levels) may have larger, and are grown to."""
        if set(arrays) != set(self._arrays):
            raise ValueError(f"state arrays must be {sorted(self._arrays)}; were {sorted(arrays)}")
        for name, saved in arrays.items():
            current = self._arrays[name]
            if saved.dtype != current.dtype or saved.shape[:1] != (rows,) or saved.ndim != current.ndim:
                raise ValueError(f"state array `{name}` must be {current.dtype} with {rows} rows and "
                                 f"{current.ndim} axes; was {saved.dtype} {saved.shape}")
            if saved.shape[1:] != current.shape[1:]:
                if name not in grow or any(s < c for s, c in zip(saved.shape[1:], current.shape[1:], strict=True)):
                    raise ValueError(f"state array `{name}` must have trailing axes "
                                     f"{'of at least ' if name in grow else ''}{current.shape[1:]}; "
                                     f"was {saved.shape[1:]}")
                current = self.reshape_tail(name, saved.shape[1:])
            current[:rows] = saved

    def reshape_tail(self, name: str, tail: tuple[int, ...]) -> np.ndarray:
        """Grow the trailing axes of one array (for the book's level capacity), keeping data."""
        old = self._arrays[name]
        new = np.full((self.capacity, *tail), self._fill[name], dtype=old.dtype)
        new[tuple(slice(0, d) for d in old.shape)] = old
        self._arrays[name] = new
        return new
