"""`CalculatorSet`: every calculator of one worker, fed a batch at a time.

The worker loop calls `on_batch` with a record batch and a dense local symbol index per
record; the set runs numba kernels over the whole batch (per-symbol state in numpy arrays,
no Python object per tick; the trade path in one call, `fused.run_batch`) and returns its
payloads as one `Messages` batch (encoded, numbered per topic and stamped with ``src``:
`encode`, `streamctl.bus.messages`) in this order:

1. bars, in the order they closed (by record, then spec order: time intervals, tick, volume,
   dollar bars, each in config order; a gap's empty bars right after the bar before them);
2. anomalies, in record order (z-score, then jump, then IQR on one trade);
3. for the symbols with trades in the batch, in ascending local index: every `Vwap`, then for
   each SMA window (config order) the `Indicator` of each symbol whose window is full, then
   for each EMA span the `Indicator` of each symbol;
4. one `Book` per symbol whose book changed, ascending local index.

`docs/calculators.md` documents every setting and the exactness rules.
"""

from __future__ import annotations

import logging

import numpy as np

from streamctl.bus.messages import Messages, MessageWriter, Topics
from streamctl.process.calc.anomalies import AnomalyBuilder
from streamctl.process.calc.bar_kernels import TIME
from streamctl.process.calc.bars import BarCalc
from streamctl.process.calc.batch import (
    COUNT_NAMES,
    KIND_SHIFT,
    META,
    N_COUNTS,
    PRICE,
    SIZE,
    TS_EVENT,
    columns,
)
from streamctl.process.calc.book import BookCalc
from streamctl.process.calc.encode import Producer, message_bounds
from streamctl.process.calc.fused import (
    ANOMALIES,
    C_BAR_BOUND,
    C_CHECK_QUOTES,
    C_EMIT_EMPTY,
    C_IND_BOUND,
    C_MAX_EMPTY,
    C_NSMA,
    C_NSYM,
    C_PUBLISH,
    C_REV_CAP,
    C_VWAP,
    C_VWAP_BOUND,
    C_VWAP_WINDOW,
    FRESH,
    N_CONFIG,
    N_RESULTS,
    NEED_BOUNDS,
    OK,
    R_ANOMALIES,
    R_BAD,
    R_BOOK,
    R_QUOTES,
    R_TMAX,
    R_TMIN,
    R_TRADES,
    RESUME,
    SERIES,
    SPLIT,
    VOIDS,
    Table,
    run_batch,
)
from streamctl.process.calc.indicators import TradeCalc
from streamctl.process.calc.revisions import Revisions
from streamctl.process.calc.settings import CalculatorsConfig
from streamctl.shm.records import Kind

__all__ = ["CalculatorSet", "warm_up"]

log = logging.getLogger("streamctl.calc")

_INITIAL_SYMBOLS = 16
_BAD_TRADES = COUNT_NAMES.index("bad_trades")
_BAD_RECORDS = COUNT_NAMES.index("bad_records")


class CalculatorSet:
    """All calculators of one worker process.

    Parameters
    ----------
    config
        The plant's `CalculatorsConfig`.
    src
        The worker's name: every payload's ``src`` (and in log messages). The set numbers its
        messages per topic (``seq``, in `topics`), so a publisher sends them as they are.
    live
        Whether `on_clock` closes time bars by the feeds' clocks (replay: bars close on trades
        and at `flush` only).

    ``counters`` holds every count of what was seen and dropped: ``trades``, ``quotes``,
    ``book_updates``, ``resets``, ``late`` (trades late for at least one time-bar interval) and
    ``late.<interval>``, ``bad_trades``, ``bad_records``, ``bad_book``, ``book_missing_level``,
    ``empty_bars``, ``empty_skipped``, ``zscore_disabled``, ``corrections`` (vendor corrections and
    cancels applied to time bars, `revisions`) and ``corrections_unmatched``.
    """

    def __init__(self, config: CalculatorsConfig, *, src: str, live: bool):
        self.config = config
        self.src = src
        self.live = live
        self._capacity = _INITIAL_SYMBOLS
        self._symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._producer = Producer(src)
        self._bars = BarCalc(config.bars, self._capacity, self._producer)
        self._revisions = Revisions(self._bars, config.bars.correction_window)
        self._trades = TradeCalc(config, self._capacity, self._producer)
        self._book = BookCalc(config.book, self._capacity) if config.book is not None else None
        self._check_quotes = bool(config.anomalies is not None and config.anomalies.crossed_quotes)
        self._anomalies = AnomalyBuilder(config.anomalies)
        self._first_bad = np.full(N_COUNTS, -1, dtype=np.int64)
        self._trade_rows = np.zeros(0, dtype=np.int64)
        self._quote_rows = np.zeros(0, dtype=np.int64)
        self._result = np.zeros(N_RESULTS, dtype=np.int64)
        self._generation = 0  # bumped when an array of the kernel table this set owns is replaced
        self._table: Table | None = None
        self._table_key: tuple[int, ...] = ()
        self._warned: set[str] = set()
        self._bind_counters()
        self.counters.update(self._revisions.counts)

    def _bind_counters(self) -> None:
        """One int64 array holds every counter; each calculator's kernels add into a view of it,
        so syncing ``counters`` after a batch is a single ``tolist``."""
        bars = self._bars
        names = [*COUNT_NAMES, "late", "empty_bars", "empty_skipped", "zscore_disabled", "bad_book",
                 "book_missing_level"]
        n_fixed = len(names)
        names += [f"late.{spec.label}" for spec in bars.specs if spec.kind == TIME]  # time specs come first
        array = np.zeros(n_fixed + len(bars.specs), dtype=np.int64)
        self._counts = array[:N_COUNTS]
        bars.counts = array[N_COUNTS:N_COUNTS + 3]
        self._trades.counts = array[N_COUNTS + 3:N_COUNTS + 4]
        if self._book is not None:
            self._book.counts = array[N_COUNTS + 4:N_COUNTS + 6]
        bars.late_by_spec = array[n_fixed:]
        self._count_array = array
        self._count_names = names
        self.counters: dict[str, int] = dict(zip(names, array.tolist(), strict=False))

    @property
    def topics(self) -> Topics:
        """The topic table numbering this set's messages (the last ``seq`` of each topic)."""
        return self._producer.topics

    @property
    def symbols(self) -> list[str]:
        """Symbols by local index."""
        return list(self._symbols)

    def add_symbol(self, symbol: str) -> int:
        """The dense local index of `symbol`, registering it on first use."""
        index = self._index.get(symbol)
        if index is not None:
            return index
        if not isinstance(symbol, str) or not symbol or not symbol.isascii() or "\x00" in symbol:
            raise ValueError(f"`symbol` must be a non-empty ASCII string without NUL; was {symbol!r}")
        index = len(self._symbols)
        if index >= self._capacity:
            self._capacity *= 2
            for calc in (self._bars, self._trades, self._book):
                if calc is not None:
                    calc.resize(self._capacity)
            self._revisions.resize(self._capacity)
        self._producer.add_symbol(symbol)
        for part in (self._bars, self._trades, self._book, self._anomalies):
            if part is not None:
                part.add_symbol(symbol)
        self._symbols.append(symbol)
        self._index[symbol] = index
        self._generation += 1  # the symbols' strings and the kernels' symbol count changed
        return index

    def export_state(self, into: dict | None = None) -> dict:
        """Everything the next batch's outputs depend on, as plain values and array copies: the
        symbols, every counter, each topic's last seq, and each calculator's state (a worker
        checkpoint's part).
        `into`: an earlier export whose arrays are reused where they fit (no longer read by anyone)."""
        into = into or {}
        topics = self._producer.topics
        return {"symbols": list(self._symbols), "counts": self._count_array.copy(),
                "topics": {"texts": list(topics.texts), "seqs": topics.seqs[:len(topics)].copy()},
                "bars": self._bars.export_state(into.get("bars")),
                "revisions": self._revisions.export_state(into.get("revisions")),
                "trades": self._trades.export_state(into.get("trades")),
                "book": None if self._book is None else self._book.export_state(into.get("book"))}

    def load_state(self, state: dict) -> None:
        """Continue from `export_state` of a set with the same config. Only a new set takes it;
        a state that does not fit raises `ValueError` naming the part."""
        if self._symbols:
            raise ValueError(f"a state loads only into a new CalculatorSet; this one has {len(self._symbols)} symbols")
        topics = self._producer.topics
        texts, seqs = state["topics"]["texts"], state["topics"]["seqs"]
        if len(texts) != len(seqs):
            raise ValueError(f"`topics` must give one seq per topic; gave {len(seqs)} for {len(texts)}")
        for text in texts:  # first, so every topic keeps its id (the calculators' state holds ids)
            topics.id(text)
        topics.seqs[:len(texts)] = seqs  # and its numbering goes on where it was
        for symbol in state["symbols"]:
            self.add_symbol(symbol)
        counts = state["counts"]
        if counts.shape != self._count_array.shape or counts.dtype != self._count_array.dtype:
            raise ValueError(f"`counts` must be {self._count_array.dtype} {self._count_array.shape}; "
                             f"was {counts.dtype} {counts.shape}")
        if (state["book"] is None) != (self._book is None):
            raise ValueError("the state's `book` does not match the config's (book on in one, off in the other)")
        self._bars.load_state(state["bars"])
        self._revisions.load_state(state["revisions"])
        self._trades.load_state(state["trades"])
        if self._book is not None:
            self._book.load_state(state["book"])
        self._revisions.resize(self._capacity)
        self._count_array[:] = counts
        self.counters.update(zip(self._count_names, self._count_array.tolist(), strict=False))
        self.counters.update(self._revisions.counts)

    def on_batch(self, records: np.ndarray, sym_idx: np.ndarray) -> Messages:
        """Run every calculator over one batch; return its messages (see module doc)."""
        rows_int, rows_float = columns(records)
        sym = np.ascontiguousarray(sym_idx, dtype=np.int32)
        if not sym.flags.writeable:
            sym = sym.copy()
        n = len(rows_int)
        if len(sym) != n:
            raise ValueError(f"`sym_idx` must have one entry per record ({n}); was {len(sym)}")
        out = self._producer.writer()
        if n == 0:
            return self._producer.finish(out)
        table = self._kernel_table(n)
        status = self._run(table, rows_int, rows_float, sym, out, FRESH)
        voids: tuple[np.ndarray, np.ndarray] | None = None
        if status == VOIDS:  # rare: a vendor voided trades; the kernel did nothing
            records, sym, voids = _split_voids(records, sym)
            rows_int, rows_float = columns(records)
            status = self._run(table, rows_int, rows_float, sym, out, SPLIT)
        if status == NEED_BOUNDS:  # the trades left the session bounds; `select` has run
            result = self._result
            self._trades.cover(int(result[R_TMIN]), int(result[R_TMAX]))
            table = self._kernel_table(n)
            status = self._run(table, rows_int, rows_float, sym, out, RESUME)
        result = self._result
        if status == ANOMALIES:  # after the bars, before the Vwap and Indicator payloads
            rows = self._trades.anomaly_rows(int(result[R_ANOMALIES]))
            self._anomalies.build(*rows, rows_int, sym, self._quote_rows[:int(result[R_QUOTES])], out)
            self._run(table, rows_int, rows_float, sym, out, SERIES)
        if result[R_BOOK] and self._book is not None:
            self._book.update(rows_int, rows_float, sym, out)
            if self._book.counts[0] and "bad_book" not in self._warned:
                self._warned.add("bad_book")
                log.warning("%s: skipping bad book records (side not bid/ask, undefined price or size < 0); "
                            "counted in counters['bad_book']", self.src)
        self.counters.update(zip(self._count_names, self._count_array.tolist(), strict=False))
        if result[R_BAD]:
            self._warn_bad(rows_int, rows_float, sym)
        self._revise(voids, out)
        return self._producer.finish(out)

    def _run(self, table: Table, rows_int: np.ndarray, rows_float: np.ndarray, sym: np.ndarray, out: MessageWriter,
             stage: int) -> int:
        """One `run_batch` call writing into `out`; returns its status."""
        if stage != RESUME and stage != SERIES:
            self._first_bad.fill(-1)
        status, out.data, out.index, out.size, out.count = run_batch(
            table.rows, rows_int, rows_float, sym, self._producer.topics.seqs, out.data, out.index, out.size,
            out.count, self._trades.next_stamp(), self._revisions.next, stage)
        if stage != SERIES and (status == OK or status == ANOMALIES):
            n_trades = int(self._result[R_TRADES])
            if n_trades:  # the trade pass ran: the ring and the stamp moved on
                self._revisions.recorded(n_trades)
                self._trades.batch_done()
        return status

    def _kernel_table(self, n: int) -> Table:
        """The `fused.Table` for a batch of `n` records, rebuilt when an array in it was replaced."""
        if len(self._trade_rows) < n:
            self._trade_rows = np.zeros(max(n, 2 * len(self._trade_rows)), dtype=np.int64)
            self._quote_rows = np.zeros(len(self._trade_rows), dtype=np.int64)
            self._generation += 1
        self._bars.reserve(n)
        self._trades.reserve(n)
        key = (self._generation, self._bars.generation, self._trades.generation, self._revisions.generation)
        if self._table is not None and key == self._table_key:
            return self._table
        producer, trades = self._producer, self._trades
        bar_bound, vwap_bound, indicator_bound = message_bounds(producer, self._bars.label_strings)
        config = np.zeros(N_CONFIG, dtype=np.int64)
        config[C_NSYM] = len(self._symbols)
        config[C_CHECK_QUOTES] = self._check_quotes
        config[C_EMIT_EMPTY] = self.config.bars.emit_empty
        config[C_MAX_EMPTY] = self.config.bars.max_empty_bars
        config[C_REV_CAP] = self._revisions.capacity
        config[C_VWAP_WINDOW] = trades.vwap_window
        config[C_PUBLISH] = trades.publishes
        config[C_VWAP] = trades.clock is not None
        config[C_NSMA] = len(trades.sma_windows)
        config[C_BAR_BOUND], config[C_VWAP_BOUND], config[C_IND_BOUND] = bar_bound, vwap_bound, indicator_bound
        self._table = Table({
            "config": config, "result": self._result, "trade_rows": self._trade_rows,
            "quote_rows": self._quote_rows, "counts": self._counts, "first_bad": self._first_bad,
            **self._bars.table_arrays(), **self._revisions.table_arrays(), **trades.table_arrays(),
            "src": producer.src, "sym_data": producer.symbols.data, "sym_ends": producer.symbols.ends})
        self._table_key = key
        return self._table

    def _revise(self, voids: tuple[np.ndarray, np.ndarray] | None, out: MessageWriter) -> None:
        """Apply a batch's CORRECTION and CANCEL records after its trades; revised bars go last."""
        if voids is None:
            return
        records, sym = voids
        rows_int, rows_float = columns(records)
        kinds = records["kind"].tolist()
        for i, s in enumerate(sym.tolist()):
            if not 0 <= s < len(self._symbols):
                self._counts[_BAD_RECORDS] += 1
                self.counters["bad_records"] = int(self._counts[_BAD_RECORDS])
                continue
            if not self._revisions.apply(kinds[i], s, rows_int[i], rows_float[i], out):
                self._warn_once("corrections_unmatched", "%s: a correction or cancel for `%s` names a trade this "
                                "worker no longer holds (counted in counters['corrections_unmatched'])",
                                self._symbols[s])
        self.counters.update(self._revisions.counts)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, self.src, *args)

    def on_clock(self, clock_ns: int | np.ndarray) -> Messages:
        """Live only: close the time bars whose end + ``close_delay`` <= their symbol's clock.

        `clock_ns` is one time for every symbol, or one per local symbol index (the worker
        passes each symbol its feed's clock: ``docs/calculators.md``, "Bar timing").
        """
        out = self._producer.writer()
        if not self.live:
            return self._producer.finish(out)
        n = len(self._symbols)
        if np.ndim(clock_ns) == 0:
            clock = np.full(n, int(clock_ns), dtype=np.int64)
        else:
            clock = np.ascontiguousarray(clock_ns, dtype=np.int64)
            if len(clock) != n:
                raise ValueError(f"`clock_ns` must have one entry per symbol ({n}); was {len(clock)}")
        self._bars.close_due(clock, out)
        return self._producer.finish(out)

    def flush(self) -> Messages:
        """Close every open bar (a clean stop); partial time bars end at their last trade + 1 ns."""
        out = self._producer.writer()
        self._bars.flush(out)
        return self._producer.finish(out)

    # ------------------------------------------------------------------ internals

    def _warn_bad(self, rows_int: np.ndarray, rows_float: np.ndarray, sym: np.ndarray) -> None:
        """Log each kind of bad input once, with the first offending record."""
        for name, col in (("bad_trades", _BAD_TRADES), ("bad_records", _BAD_RECORDS)):
            first = int(self._first_bad[col])
            if first < 0 or name in self._warned:
                continue
            self._warned.add(name)
            s = int(sym[first])
            symbol = self._symbols[s] if 0 <= s < len(self._symbols) else f"<unknown local index {s}>"
            kind = (int(rows_int[first, META]) >> KIND_SHIFT) & 0xFF
            what = (f"row {first}: kind `{kind}` symbol `{symbol}` ts_event `{int(rows_int[first, TS_EVENT])}` "
                    f"price `{int(rows_int[first, PRICE])}` size `{float(rows_float[first, SIZE])}`")
            log.warning("%s: skipping %s (counted in counters[%r]); first: %s", self.src, name.replace("_", " "),
                        name, what)


def _split_voids(records: np.ndarray, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(the other records, their symbols, (the CORRECTION/CANCEL records, their symbols))."""
    kind = records["kind"]
    void = (kind == Kind.CORRECTION) | (kind == Kind.CANCEL)
    return records[~void], sym[~void], (records[void], sym[void])


def warm_up() -> float:
    """Compile every kernel (or load it from numba's on-disk cache) before real work; returns
    the seconds it took. A first compile takes about 90 s on 2 cores; loading from the cache well under 1 s.
    A supervisor or a test session can call it once so no worker pays it on its first batch."""
    import time

    from streamctl.process.calc.settings import AnomalyConfig, BarsConfig, BookConfig, VwapConfig
    from streamctl.shm.records import RECORD_DTYPE, Side

    start = time.perf_counter()
    config = CalculatorsConfig(
        bars=BarsConfig(time=["1s"], ticks=[2], volume=[3.0], dollar=[10.0], emit_empty=True),
        vwap=VwapConfig(), sma=[2], ema=[2], anomalies=AnomalyConfig(), book=BookConfig())
    calc = CalculatorSet(config, src="warm-up", live=True)
    calc.add_symbol("WARM")
    batch = np.zeros(6, dtype=RECORD_DTYPE)
    batch["kind"] = [Kind.TRADE, Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.RESET, Kind.TRADE]
    batch["side"] = [Side.NONE, Side.NONE, Side.NONE, Side.BID, Side.NONE, Side.NONE]
    batch["ts_event"] = [1, 2, 3, 4, 5, 3_000_000_001]
    batch["price"] = [1_000_000_000, 2_000_000_000, 2_000_000_000, 1_000_000_000, 0, 1_000_000_000]
    batch["price2"] = 1_000_000_000
    batch["size"] = 1.0
    sym = np.zeros(len(batch), dtype=np.int32)
    calc.on_batch(batch, sym)
    calc.on_clock(10_000_000_000)
    calc.flush()
    return time.perf_counter() - start
