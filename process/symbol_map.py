"""A worker's map from each feed's instrument ids to its dense local symbol indices.

Kept apart from `worker` so that importing the worker's spec (the CLI does) loads no numba: the
lookup of a batch is one compiled pass (`_local_indices`).
"""

from __future__ import annotations

import numba
import numpy as np

from streamctl.shm.records import empty

__all__ = ["SymbolMap", "warm_up"]


@numba.njit(cache=True)
def _local_indices(records, lookup):
    """``lookup[instrument_id]`` per record (-1 past its end), and how many are -1: one compiled
    pass where numpy took some eight calls of a microsecond or more each per batch."""
    idx = np.empty(len(records), dtype=np.int32)
    unknown = 0
    for i in range(len(records)):
        instrument = records[i].instrument_id
        local = lookup[instrument] if instrument < len(lookup) else -1
        idx[i] = local
        unknown += local < 0
    return idx, unknown


def warm_up() -> None:
    """Compile (or load) `_local_indices` for a ring's batch (the forkserver calls this)."""
    _local_indices(empty(1), np.full(1, -1, dtype=np.int32))


class SymbolMap:
    """Feed instrument id -> dense local symbol index, grown as new ids appear.

    `on_learn(instrument, symbol)` hears of every id resolved through the registry (the journal
    writes it down). `registry` is None while a restart replays its journal: then only what
    `learn` was told is known, as it was when the journal was written.
    """

    def __init__(self, registry, calculators, symbols: list[str], on_learn=None):
        self.registry = registry
        self.on_learn = on_learn
        self._calc = calculators
        self._symbols = symbols
        self._lookup = np.full(256, -1, dtype=np.int32)

    def learn(self, instrument: int, symbol: str) -> None:
        """Map `instrument` to `symbol` (registering it with the calculators)."""
        if instrument >= len(self._lookup):
            grown = np.full(max(instrument + 1, 2 * len(self._lookup)), -1, dtype=np.int32)
            grown[: len(self._lookup)] = self._lookup
            self._lookup = grown
        local = self._calc.add_symbol(symbol)
        while len(self._symbols) <= local:
            self._symbols.append("")
        self._symbols[local] = symbol
        self._lookup[instrument] = local

    def indices(self, records: np.ndarray) -> np.ndarray:
        """The local index of each record's instrument (-1: unknown, even to the registry)."""
        idx, unknown = _local_indices(records, self._lookup)
        if unknown and self.registry is not None:  # new ids (rare): ask the registry
            ids = records["instrument_id"].astype(np.int64)
            for instrument in np.unique(ids[idx < 0]).tolist():
                symbol = self.registry.symbol(instrument)
                if symbol is not None:
                    if self.on_learn is not None:
                        self.on_learn(instrument, symbol)
                    self.learn(instrument, symbol)
            idx, _ = _local_indices(records, self._lookup)
        return idx

    @property
    def lookup(self) -> np.ndarray:
        """Instrument id -> local index (-1: not known yet)."""
        return self._lookup

    def resume(self, calculators, lookup: np.ndarray) -> None:
        """Go on with `lookup` (from a checkpoint) and the calculators restored with it."""
        self._calc = calculators
        self._lookup = lookup.copy()

    def carried(self) -> np.ndarray:
        """The local indices of the symbols this feed has delivered."""
        return self._lookup[self._lookup >= 0]
