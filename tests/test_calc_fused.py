"""`fused.run_batch`, the one compiled call per batch: its array table, its cache key, and a set
whose calculators replace their arrays between batches.

The payloads themselves are checked against the references in `test_calc_bars.py`,
`test_calc_trades.py` and `test_calc_engine.py`, and byte for byte in `test_calc_encode.py`.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np
import pytest
from _calcref import make_trades
from numba.core.registry import CPUDispatcher

from streamctl.process.calc import fused
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import (
    AnomalyConfig,
    BarsConfig,
    CalculatorsConfig,
    VwapConfig,
    ZScoreConfig,
)


def _arrays() -> dict[str, np.ndarray]:
    return {name: np.zeros((2,) * ndim, dtype=dtype) for name, dtype, ndim in fused.SLOTS}


def test_a_table_holds_each_array_address_and_shape():
    arrays = _arrays()
    arrays["ring_pv_vol"] = np.zeros((3, 8, 2))
    table = fused.Table(arrays)
    row = table.rows[list(arrays).index("ring_pv_vol")]
    assert row.tolist() == [arrays["ring_pv_vol"].ctypes.data, 3, 8, 2]
    assert table.arrays["ring_pv_vol"] is arrays["ring_pv_vol"]  # held: the address stays valid


@pytest.mark.parametrize(("name", "array", "message"), [
    ("bar_int", np.zeros((2, 2, 2), dtype=np.float64), "`bar_int` must be C-contiguous int64 with 3 axes; was float64"),
    ("touched", np.zeros(8, dtype=np.int64)[::2], r"`touched` must be C-contiguous int64 with 1 axes; was int64 \(4,\) "
                                                  r"\(strided\)"),
    ("sma", np.zeros(4, dtype=np.int64), "`sma` must be C-contiguous int64 with 2 axes"),
])
def test_a_table_refuses_an_array_of_the_wrong_type_naming_it(name, array, message):
    arrays = _arrays()
    arrays[name] = array
    with pytest.raises(ValueError, match=message):
        fused.Table(arrays)


def test_a_table_refuses_missing_and_unknown_arrays():
    arrays = _arrays()
    del arrays["bounds"]
    arrays["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['bounds'\], unknown \['extra'\]"):
        fused.Table(arrays)


def _kernels_reached(function, seen: set) -> set[ModuleType]:
    """The modules of every numba kernel `function` calls, directly or through other kernels."""
    modules = set()
    for name in function.__code__.co_names:
        callee = function.__globals__.get(name)
        if isinstance(callee, CPUDispatcher) and callee not in seen:
            seen.add(callee)
            modules.add(sys.modules[callee.py_func.__module__])
            modules |= _kernels_reached(callee.py_func, seen)
    return modules


def test_run_batch_is_cached_under_a_digest_of_every_kernel_module_it_calls():
    reached = _kernels_reached(fused.run_batch.py_func, set())
    assert reached - {fused} == set(fused._CALLEES)  # a kernel from another module would be served stale
    assert [cell.cell_contents for cell in fused.run_batch.py_func.__closure__] == [fused._sources_digest()]


CONFIG = CalculatorsConfig(
    bars=BarsConfig(time=["1s", "5s"], ticks=[7], emit_empty=True, max_empty_bars=4),
    vwap=VwapConfig(session_start="00:00", rolling_window=20), sma=[5], ema=[3],
    anomalies=AnomalyConfig(zscore=ZScoreConfig(window=10, threshold=2.5), jump_pct=1.0), book=None)


def _run(batches: list[int], records: np.ndarray, sym: np.ndarray, names: list[str], *,
         clock_every: int = 0) -> tuple[dict[str, list[bytes]], dict[str, bytes], dict[str, int]]:
    """Bars (per topic, in order), the last Vwap/Indicator of each topic (without its seq) and
    the counters, feeding `records` in batches of the given sizes; symbols are added as they
    first appear, and (live) every `clock_every` batches the clock closes due bars."""
    calc = CalculatorSet(CONFIG, src="t", live=clock_every > 0)
    bars: dict[str, list[bytes]] = {}
    last: dict[str, bytes] = {}
    start = 0
    for k, size in enumerate(batches):
        chunk, idx = records[start:start + size], sym[start:start + size]
        local = np.array([calc.add_symbol(names[s]) for s in idx], dtype=np.int32)
        outputs = [calc.on_batch(chunk, local)]
        if clock_every and k % clock_every == 0:
            outputs.append(calc.on_clock(int(chunk["ts_event"].min())))
        for topic, payload in (item for messages in outputs for item in messages.decode()):
            if topic.startswith("bar."):
                bars.setdefault(topic, []).append(payload)
            elif topic.split(".")[0] in ("vwap", "sma", "ema"):
                payload.seq = 0
                last[topic] = payload
        start += size
    for topic, payload in calc.flush().decode():
        bars.setdefault(topic, []).append(payload)
    return bars, last, dict(calc.counters)


@pytest.mark.parametrize("live", [False, True], ids=["replay", "live"])
def test_arrays_replaced_between_batches_are_the_ones_the_next_batch_uses(live):
    """Symbols past the initial capacity of 16 (every state array regrows), batches larger than
    any before (the scratch arrays regrow), a day boundary (new session bounds) and, live,
    clock closes of many bars at once (the bar output rows regrow): each replaces arrays the
    kernel table points at. One trade per batch is the reference: bars, the series' last
    values and the counters do not depend on how trades are split into batches."""
    records, sym = make_trades(6000, symbols=40, seed=11, t0=1_704_239_900 * 10**9)  # 23:58:20 UTC
    assert records["ts_event"][0] // 86_400_000_000_000 < records["ts_event"][-1] // 86_400_000_000_000
    names = [f"S{i:02d}" for i in range(40)]
    sizes = [3, 5, 40, 400, 2, 900, 1700, 11, 2939]
    assert sum(sizes) == len(records)
    clock = 2 if live else 0
    got = _run(sizes, records, sym, names, clock_every=clock)
    reference = _run([1] * len(records), records, sym, names)
    assert got[1] == reference[1] and len(got[1]) == 40 * 3
    if not live:  # live, the clock closes bars before their late trades come: those count as late
        assert got[0] == reference[0]
        assert got[2] == reference[2]
