"""Bars of every kind (time, tick, volume, dollar) for all symbols: state, specs and payloads.

The state machines are in `bar_kernels`; this module turns `BarsConfig` into specs, owns the
per-symbol state arrays and the output buffer, and writes output rows as `Bar` payloads (`encode`).
Spec order (also the order of bars closed by one trade): time intervals in config order,
then tick, volume and dollar bars in config order.
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamctl.bus.messages import MessageWriter
from streamctl.bus.wire import topic
from streamctl.process.calc import bar_kernels
from streamctl.process.calc.encode import Producer, Strings, write_bars
from streamctl.process.calc.settings import BarsConfig, parse_interval
from streamctl.process.calc.state import SymbolArrays

__all__ = ["BarSpec", "BarCalc", "bar_specs", "format_threshold"]

_NS = 1_000_000_000


class BarSpec(msgspec.Struct, frozen=True):
    """One bar series: `kind` (`bar_kernels.TIME`...), its parameter and its label."""

    kind: int
    param: float
    """Seconds (time), trades (tick), volume or notional."""
    label: str
    """The interval string of payloads and topics: ``60s``, ``100t``, ``5000v``, ``1000000d``."""


def format_threshold(value: float) -> str:
    """A threshold without a trailing ``.0``; a fractional one with ``p`` for the point.

    Topics split on ``.``, so ``0.5`` is written ``0p5`` (``bar.0p5v.BTCUSD``).
    """
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value)).replace(".", "p")


def bar_specs(config: BarsConfig) -> list[BarSpec]:
    """Every bar series of a config, in spec order (duplicates removed, first kept)."""
    specs: list[BarSpec] = []
    for i, value in enumerate(config.time):
        try:
            seconds = parse_interval(value)
        except ValueError as exc:
            raise ValueError(f"`bars.time[{i}]` {exc}; was {value!r}") from None
        specs.append(BarSpec(bar_kernels.TIME, seconds, f"{seconds}s"))
    specs += [BarSpec(bar_kernels.TICKS, n, f"{n}t") for n in config.ticks]
    specs += [BarSpec(bar_kernels.VOLUME, v, f"{format_threshold(v)}v") for v in config.volume]
    specs += [BarSpec(bar_kernels.DOLLAR, d, f"{format_threshold(d)}d") for d in config.dollar]
    unique: dict[str, BarSpec] = {}
    for spec in specs:
        unique.setdefault(spec.label, spec)
    return list(unique.values())


class BarCalc:
    """All bar series of all symbols: batches through `fused.run_batch`, ``close_due`` live, ``flush`` at stop."""

    def __init__(self, config: BarsConfig, capacity: int, producer: Producer):
        self.specs = bar_specs(config)
        self.labels = [spec.label for spec in self.specs]
        self._producer = producer
        self._label_strings = Strings([msgspec.msgpack.encode(label) for label in self.labels])
        self._spec_kind = np.array([s.kind for s in self.specs], dtype=np.int64)
        self._spec_int = np.array(  # time bars: the width in ns
            [int(s.param) * _NS if s.kind == bar_kernels.TIME else int(s.param) for s in self.specs],
            dtype=np.int64)
        self._spec_float = np.array([float(s.param) for s in self.specs], dtype=np.float64)
        self._emit_empty = bool(config.emit_empty)
        self._max_empty = int(config.max_empty_bars)
        self._delay = round(config.close_delay * _NS)
        n = len(self.specs)
        self.state = SymbolArrays(capacity)
        self.state.add("bar_int", (n, bar_kernels.NB_I), np.int64, 0)
        self.state["bar_int"][:, :, bar_kernels.B_WM] = bar_kernels.NO_WATERMARK
        self.state.add("bar_float", (n, bar_kernels.NB_F), np.float64, 0.0)
        self.state.add("tid", (n,), np.int64, -1)
        """Per (symbol, spec): the topic id in the producer's topic table."""
        self._topics: list[list[str]] = [[] for _ in self.specs]
        self._symbols: list[str] = []
        self._out_int = np.zeros((0, bar_kernels.NO_I), dtype=np.int64)
        self._out_float = np.zeros((0, bar_kernels.NO_F), dtype=np.float64)
        self.late_by_spec = np.zeros(n, dtype=np.int64)
        self.counts = np.zeros(3, dtype=np.int64)
        """[late trades, empty bars emitted, empty bars skipped over the cap]"""
        self.late_mask = np.zeros(0, dtype=np.int64)
        """After a batch: per trade, bit k set when it was late for time spec k."""
        self.generation = 0
        """Bumped whenever an array of `table_arrays` is replaced."""

    def __bool__(self) -> bool:
        return bool(self.specs)

    def resize(self, capacity: int) -> None:
        old = self.state.capacity
        self.state.resize(capacity)
        self.generation += 1
        self.state["bar_int"][old:, :, bar_kernels.B_WM] = bar_kernels.NO_WATERMARK

    def export_state(self, into: dict | None = None) -> dict:
        """The open bars of every symbol (a checkpoint's part; `load_state` takes it back)."""
        return self.state.export(len(self._symbols), into)

    def load_state(self, state: dict) -> None:
        self.state.load(state, len(self._symbols))
        self.generation += 1

    def add_symbol(self, symbol: str) -> None:
        s = len(self._symbols)
        self._symbols.append(symbol)
        for k, (topics, label) in enumerate(zip(self._topics, self.labels, strict=True)):
            topics.append(topic("bar", symbol, label))
            self.state["tid"][s, k] = self._producer.topics.id(topics[-1])

    def _room(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._out_int) < rows:
            size = max(rows, 2 * len(self._out_int))
            self._out_int = np.zeros((size, bar_kernels.NO_I), dtype=np.int64)
            self._out_float = np.zeros((size, bar_kernels.NO_F), dtype=np.float64)
            self.generation += 1
        return self._out_int, self._out_float

    def reserve(self, n_trades: int) -> None:
        """Room in the output rows and `late_mask` for a batch of `n_trades` trades (`fused.run_batch`)."""
        self._room(2 * n_trades * len(self.specs))
        if len(self.late_mask) < n_trades:
            self.late_mask = np.zeros(max(n_trades, 2 * len(self.late_mask)), dtype=np.int64)
            self.generation += 1

    def table_arrays(self) -> dict[str, np.ndarray]:
        """This calculator's arrays in `fused.SLOTS` (valid until `generation` changes)."""
        return {"spec_kind": self._spec_kind, "spec_int": self._spec_int, "spec_float": self._spec_float,
                "bar_int": self.state["bar_int"], "bar_float": self.state["bar_float"], "bar_out_int": self._out_int,
                "bar_out_float": self._out_float, "late_by_spec": self.late_by_spec, "bar_counts": self.counts,
                "late_mask": self.late_mask, "bar_tid": self.state["tid"],
                "label_data": self._label_strings.data, "label_ends": self._label_strings.ends}

    @property
    def label_strings(self) -> Strings:
        return self._label_strings

    def close_due(self, clock: np.ndarray, out: MessageWriter) -> None:
        """Close the time bars whose end + close_delay their symbol's clock (`clock[s]`, ns) has passed."""
        nsym = len(self._symbols)
        if not self.specs or nsym == 0:
            return
        out_int, out_float = self._room(nsym * len(self.specs))
        rows = bar_kernels.close_due(nsym, self._spec_kind, self._spec_int, self._delay, clock,
                                     self.state["bar_int"], self.state["bar_float"], out_int, out_float)
        self._payloads(rows, out)

    def flush(self, out: MessageWriter) -> None:
        """Close every open bar (partial bars: see `bar_kernels.flush_bars`)."""
        nsym = len(self._symbols)
        if not self.specs or nsym == 0:
            return
        out_int, out_float = self._room(nsym * len(self.specs))
        rows = bar_kernels.flush_bars(nsym, self._spec_kind, self._spec_int, self.state["bar_int"],
                                      self.state["bar_float"], out_int, out_float)
        self._payloads(rows, out)

    @property
    def widths(self) -> np.ndarray:
        """Per spec: the width in ns (time bars) or the count (tick bars)."""
        return self._spec_int

    @property
    def spec_kinds(self) -> np.ndarray:
        return self._spec_kind

    def topic(self, s: int, k: int) -> str:
        return self._topics[k][s]

    def symbol(self, s: int) -> str:
        return self._symbols[s]

    def _payloads(self, rows: int, out: MessageWriter, empty: int = 0) -> None:
        write_bars(out, self._producer, self._label_strings, self._out_int, self._out_float, rows,
                   self.state["tid"], self._spec_int, empty)
