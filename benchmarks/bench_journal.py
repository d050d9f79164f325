"""The journal's cost: the worker's batch path with the journal on against off, in the same run.

Workload: `bench_worker`'s synthetic trades (100 symbols) and its full calculator set (time bars
1s/60s/300s, 100-tick bars, session and rolling VWAP, EMA(20), z-score). One batch goes
through what the worker does with it: published into a real shared-memory ring, consumed in
batches of 1,024 and of 4,096 records (journal on: by the ring straight into the journal's
mapping, in pages its thread faulted in ahead, then the entry's header written), released, then
run through the calculators. Off and on
alternate batch by batch, so both see the same machine; the headline is records per second of
the median batch time. The anchor beside the journal: the same batches handed to ``writev`` on
a file opened for appending, the way the journal wrote before. Also: the journal's raw append
rate (`sync: none` and `batch`), and recovery: a journal of N records read back and replayed
through the calculators, as a restarted worker does, against a recovery from a
checkpoint taken `TAIL` records before the end (the most the default ``checkpoint_records``
leaves to replay) plus that tail. And what taking one checkpoint costs for 100 and 10,000
symbols: the copy of the state on the worker's thread, and the encoding plus synced write that
a background thread does.
Run: ``python benchmarks/bench_journal.py [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _table import bench_main
from bench_worker import FULL_CONFIG, make_ticks

from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.journal.checkpoints import read_checkpoint, write_checkpoint
from streamctl.process.journal.files import LINE, RECORDS, entry_header, read_entries, run_files
from streamctl.process.journal.mapped import warm_up
from streamctl.process.journal.settings import JournalConfig
from streamctl.process.journal.writer import JournalWriter
from streamctl.shm.ring import Ring
from streamctl.shm.segments import segment_name

__all__ = ["run"]

BATCH = 4096
RUN = 1


def _calc(symbols: int = 100) -> CalculatorSet:
    calc = CalculatorSet(FULL_CONFIG, src="bench", live=True)
    for s in range(symbols):
        calc.add_symbol(f"S{s:03d}")
    return calc


def _step(chunk: np.ndarray, sym: np.ndarray, ring: Ring, calc: CalculatorSet,
          journal: JournalWriter | int | None) -> float:
    """One batch through ring (+ journal, or + ``writev`` to the fd `journal`) + calculators,
    as the worker does; seconds."""
    ring.publish(chunk)
    began = time.perf_counter()
    room = journal.reserve_records(len(chunk)) if isinstance(journal, JournalWriter) else None
    got = ring.consume(len(chunk), out=room, release=journal is None)
    if journal is not None:
        position = ring.consumed
        if isinstance(journal, JournalWriter):
            got = journal.append_records(0, position, got, 0)
        else:
            os.writev(journal, [entry_header(RECORDS, 0, len(got), len(got) * 64, position, 0, 0),
                                np.ascontiguousarray(got).view(np.uint8).data])
        ring.release_to(position + len(got))
    calc.on_batch(got, sym)
    return time.perf_counter() - began


def _worker_rows(records: np.ndarray, sym: np.ndarray, passes: int, batch: int, tmp: Path) -> list[dict]:
    """Off, the journal and ``writev`` take turns batch by batch (each with its own
    calculators), so a machine shared with other work slows them alike."""
    name = segment_name("bench", "ring", "journal", f"p{time.time_ns() % 1_000_000}")
    ring = Ring.create(name, 1 << 14)
    times: dict[str, list[float]] = {"off": [], "journal": [], "writev": []}
    try:
        for i in range(passes):
            calcs = {mode: _calc() for mode in times}
            writer = JournalWriter(tmp / f"b{batch}-pass{i}", partition=0, run=RUN, config=JournalConfig(sync="none"))
            fd = os.open(tmp / f"b{batch}-pass{i}.writev", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sinks: dict[str, JournalWriter | int | None] = {"off": None, "journal": writer, "writev": fd}
            for start in range(0, len(records), batch):
                chunk, chunk_sym = records[start:start + batch], sym[start:start + batch]
                for mode, sink in sinks.items():
                    times[mode].append(_step(chunk, chunk_sym, ring, calcs[mode], sink))
            writer.close()
            os.close(fd)
    finally:
        ring.close()
        ring.unlink()
    rate = {mode: batch / statistics.median(t) for mode, t in times.items()}
    note = f"{len(records):,} records x {passes} passes, median batch; full calculator set"
    return [
        {"benchmark": f"worker, batch {batch}: journal off", "value": rate["off"], "unit": "records/s", "note": note},
        {"benchmark": f"worker, batch {batch}: journal on (sync none)", "value": rate["journal"], "unit": "records/s",
         "note": f"{(rate['journal'] / rate['off'] - 1) * 100:+.1f} % against off in the same run"},
        {"benchmark": f"worker, batch {batch}: writev instead (anchor)", "value": rate["writev"], "unit": "records/s",
         "note": f"{(rate['writev'] / rate['off'] - 1) * 100:+.1f} % against off in the same run"},
    ]


def _append_rows(records: np.ndarray, tmp: Path) -> list[dict]:
    rows = []
    for policy in ("none", "batch"):
        writer = JournalWriter(tmp / f"append-{policy}", partition=0, run=RUN, config=JournalConfig(sync=policy))
        began = time.perf_counter()
        for start in range(0, len(records), BATCH):
            writer.append_records(0, start, records[start:start + BATCH], 0)
        writer.close()
        seconds = time.perf_counter() - began
        rows.append({"benchmark": f"journal append, sync {policy}", "value": len(records) / seconds,
                     "unit": "records/s", "note": f"{writer.bytes / seconds / 1e6:,.0f} MB/s, {BATCH}-record batches"})
    return rows


def _recovery_rows(records: np.ndarray, sym: np.ndarray, tmp: Path) -> list[dict]:
    directory = tmp / "append-none"  # written by `_append_rows`
    calc = _calc()
    began = time.perf_counter()
    n = 0
    for path in run_files(directory, RUN):
        for entry in read_entries(path, partition=0, repair=True):
            if entry.kind == RECORDS:
                calc.on_batch(entry.payload, sym[entry.position:entry.position + len(entry.payload)])
                n += len(entry.payload)
    seconds = time.perf_counter() - began
    assert n == len(records)
    return [{"benchmark": "recovery: journal read + replayed into state", "value": n / seconds, "unit": "records/s",
             "note": f"{n:,} records ({n * 64 / 1e6:,.0f} MB) in {seconds:.2f} s; full calculator set"},
            {"benchmark": "restart: whole journal replayed (anchor)", "value": seconds, "unit": "s",
             "note": f"{n:,} records"}]


TAIL = 1_000_000
"""Records after the checkpoint: the default ``journal.checkpoint_records``, the most a restart replays."""


def _checkpoint_restart_rows(sym: np.ndarray, tmp: Path) -> list[dict]:
    """A checkpoint taken `TAIL` records before the journal's end, then a restart from it: load
    it into a new set and replay the entries after its offset."""
    directory = tmp / "append-none"
    (path,) = run_files(directory, RUN)
    entries = list(read_entries(path, partition=0, repair=False))
    total = sum(len(e.payload) for e in entries)
    calc, offset, n = _calc(), LINE, 0
    for entry in entries:
        if n >= total - min(TAIL, total // 4):
            break
        calc.on_batch(entry.payload, sym[entry.position:entry.position + len(entry.payload)])
        offset += LINE + len(entry.payload) * LINE
        n += len(entry.payload)
    del entries
    written = write_checkpoint(tmp, run=RUN, day=0, offset=offset, state={"calc": calc.export_state()})
    began = time.perf_counter()
    restored = CalculatorSet(FULL_CONFIG, src="bench", live=True)
    restored.load_state(read_checkpoint(written)["calc"])
    tail = 0
    for entry in read_entries(path, partition=0, repair=False, start=offset):
        restored.on_batch(entry.payload, sym[entry.position:entry.position + len(entry.payload)])
        tail += len(entry.payload)
    seconds = time.perf_counter() - began
    return [{"benchmark": "restart: checkpoint + journal tail", "value": seconds, "unit": "s",
             "note": f"checkpoint at {n:,} of {total:,} records, {tail:,} replayed; "
                     f"{written.stat().st_size / 1e6:.1f} MB checkpoint"}]


def _checkpoint_cost_rows(tmp: Path) -> list[dict]:
    """One checkpoint of a worker with 100 and with 10,000 symbols (state filled by trades)."""
    rows = []
    for symbols in (100, 10_000):
        records, sym = make_ticks(max(200_000, 20 * symbols), symbols=symbols)
        calc = _calc(symbols)
        for start in range(0, len(records), BATCH):
            calc.on_batch(records[start:start + BATCH], sym[start:start + BATCH])
        copies, writes = [], []
        state = None
        for i in range(6):  # the worker's copies reuse the arrays of its last checkpoint, once written
            began = time.perf_counter()
            state = calc.export_state(state)
            copies.append(time.perf_counter() - began)
            began = time.perf_counter()
            written = write_checkpoint(tmp, run=RUN + 1, day=symbols, offset=LINE * (i + 1), state=state)
            writes.append(time.perf_counter() - began)
        size = written.stat().st_size
        rows += [
            {"benchmark": f"checkpoint, {symbols:,} symbols: state copy (worker thread)",
             "value": statistics.median(copies[1:]) * 1e3, "unit": "ms",
             "note": f"median of 5 into the last one's arrays; the first, into new memory: {copies[0] * 1e3:.1f} ms"},
            {"benchmark": f"checkpoint, {symbols:,} symbols: encode + write + fdatasync (background)",
             "value": statistics.median(writes) * 1e3, "unit": "ms", "note": f"{size / 1e6:.1f} MB; median of 6"},
        ]
    return rows


DAY = 4_600_000
"""Records of "a day" for the append and recovery rows: the size of issue 9's MBP-1 tape (a day
of one CME future's top of book); here synthetic trades, the dearer kind to replay."""


def run(quick: bool = False) -> list[dict]:
    warm_up()  # the journal thread's loop, loaded before the worker forks as `cli/preload` does
    records, sym = make_ticks(200_000 if quick else 2_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        rows = [row for batch in (1024, BATCH)
                for row in _worker_rows(records, sym, 2 if quick else 3, batch, Path(tmp))]
        day, day_sym = make_ticks(200_000 if quick else DAY)
        rows += _append_rows(day, Path(tmp))
        rows += _recovery_rows(day, day_sym, Path(tmp))
        rows += _checkpoint_restart_rows(day_sym, Path(tmp))
        rows += _checkpoint_cost_rows(Path(tmp))
    return rows


if __name__ == "__main__":
    raise SystemExit(bench_main(run, __doc__))
