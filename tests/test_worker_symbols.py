"""The worker's instrument id -> local symbol index map, over a real registry segment.

Each batch is looked up in one compiled pass; ids the map has not seen are resolved through the
feed's registry (and told to the journal) once, ids the registry does not know either stay -1
(the worker counts those records malformed and drops them), and so do ids past the end of the
map's table.
"""

from __future__ import annotations

import numpy as np
from _shmutil import no_leaks, unique_plant

from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import BarsConfig, CalculatorsConfig
from streamctl.process.symbol_map import SymbolMap
from streamctl.shm.records import empty
from streamctl.shm.registry import SymbolRegistry
from streamctl.shm.segments import segment_name


def _batch(ids: list[int]) -> np.ndarray:
    records = empty(len(ids))
    records["instrument_id"] = ids
    return records


def test_ids_resolve_once_through_the_registry_and_unknown_ones_stay_negative():
    with no_leaks(unique_plant("sym")) as plant:
        registry = SymbolRegistry.create(segment_name(plant, "sym", "feed"), 16, plant=plant)
        try:
            aapl, msft = registry.id_for("AAPL"), registry.id_for("MSFT")
            calc = CalculatorSet(CalculatorsConfig(bars=BarsConfig(time=["1s"])), src="w0", live=True)
            symbols: list[str] = []
            learned: list[tuple[int, str]] = []
            symbols_map = SymbolMap(registry, calc, symbols, on_learn=lambda i, s: learned.append((i, s)))
            far = 100_000  # past the end of the map's table, and unknown to the registry
            assert symbols_map.indices(_batch([msft, aapl, msft, 7, far])).tolist() == [1, 0, 1, -1, -1]
            assert symbols == ["AAPL", "MSFT"] and learned == [(aapl, "AAPL"), (msft, "MSFT")]  # by id
            esz4 = registry.id_for("ESZ4")  # registered later by the feed
            assert symbols_map.indices(_batch([esz4, aapl])).tolist() == [2, 0]
            assert learned[-1] == (esz4, "ESZ4") and len(learned) == 3
            assert symbols_map.indices(_batch([])).tolist() == []

            replaying = SymbolMap(None, calc, symbols)  # a restart's journal replay: no registry
            replaying.learn(far, "AAPL")
            assert replaying.indices(_batch([far, aapl])).tolist() == [0, -1]
        finally:
            registry.close()
            registry.unlink()
