"""Worker checkpoints: what a worker's state is, taken between two journal entries and put back.

A checkpoint holds everything the worker's next outputs depend on (`capture`): the calculators'
state (`CalculatorSet.export_state`), the symbols and each feed's instrument map, the
publisher's per-topic ``seq`` and message count, the feed clocks, where each ring's journaled
batches end, and the journal position the state is at. A restart (`restore`) puts it back with
`apply` and replays only the journal entries after it. `Checkpointer` takes one when the
``journal.checkpoint_*`` settings say so: the copy is made on the worker's thread (arrays copied,
so it is consistent), the encoding and the synced write on a background thread, so the worker
waits for a memory copy, not for the disk (`benchmarks/bench_journal.py` measures both).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from streamctl.process.journal.checkpoints import FORMAT, prune, write_checkpoint
from streamctl.process.journal.settings import JournalConfig

if TYPE_CHECKING:
    from streamctl.process.worker import Worker, WorkerSpec

__all__ = ["fingerprint", "capture", "apply", "Checkpointer"]

log = logging.getLogger("streamctl.worker")

_JOIN_SECONDS = 30.0
"""At close, the longest the worker waits for a checkpoint being written."""


def fingerprint(spec: WorkerSpec) -> str:
    """What a checkpoint must have been written for: the format, the calculators' config, the
    feeds (ring order) and raw topics. Another config's state is refused, not misread."""
    what = [FORMAT, spec.calculators, [s.feed for s in spec.sources], spec.raw_trades, spec.raw_quotes,
            spec.partition]
    return hashlib.sha256(msgspec.json.encode(what)).hexdigest()


def capture(worker: Worker, ends: list[int | None], into: dict | None = None) -> dict:
    """The worker's state now, between two journal entries (copies: the worker goes on at once).

    `ends`: per ring, the read position just past its last journaled batch (None: none yet);
    `into`: an earlier capture, written and no longer read, whose arrays the copies reuse.
    """
    journal = worker.journal
    assert journal is not None and journal.path is not None
    return {
        "fingerprint": fingerprint(worker.spec),
        "journal": {"file": journal.path.name, "offset": journal.end},
        "rings": [-1 if end is None else end for end in ends],
        "symbols": list(worker.symbols),
        "maps": [symbols.lookup.copy() for symbols in worker.maps],
        "publisher": {"messages_out": worker.publisher.messages_out, "seqs": worker.publisher.sequences()},
        "clocks": [[clock.event, clock.suspect, clock.held] for clock in worker.clocks],
        "calc": worker.calc.export_state((into or {}).get("calc")),
        "written_ns": time.time_ns(),
    }


def apply(worker: Worker, state: dict) -> list[int | None]:
    """Put `state` (from `capture`, same fingerprint) into a worker that has restored nothing yet.

    The calculators are built and loaded aside first: a state that does not fit raises
    `ValueError` before anything of the worker changed. Returns the rings' journaled ends.
    """
    from streamctl.process.calc.engine import CalculatorSet

    spec = worker.spec
    calc = CalculatorSet(spec.calculators, src=spec.name, live=spec.live)
    calc.load_state(state["calc"])
    maps, clocks, rings = state["maps"], state["clocks"], state["rings"]
    if not len(maps) == len(clocks) == len(rings) == len(worker.rings):
        raise ValueError(f"the checkpoint has {len(rings)} rings; this worker reads {len(worker.rings)}")
    symbols = [str(s) for s in state["symbols"]]
    if symbols != calc.symbols:
        raise ValueError("the checkpoint's worker symbols differ from its calculators'")
    for lookup in maps:
        if lookup.dtype != np.int32 or lookup.ndim != 1 or (len(lookup) and int(lookup.max()) >= len(symbols)):
            raise ValueError("a checkpoint's instrument map must be int32 local indices of its symbols")
    worker.calc = calc
    worker.symbols[:] = symbols
    for symbol_map, lookup in zip(worker.maps, maps, strict=True):
        symbol_map.resume(calc, lookup)
    worker.publisher.resume_sequences({str(t): int(s) for t, s in state["publisher"]["seqs"].items()},
                                      int(state["publisher"]["messages_out"]))
    now = time.time_ns()
    for clock, (event, suspect, held) in zip(worker.clocks, clocks, strict=True):
        clock.event, clock.suspect, clock.held = int(event), None if suspect is None else int(suspect), int(held)
        clock.read_at = now  # as a replay of its batches would have left it
    worker.late_seen = calc.counters.get("late", 0)
    return [None if end < 0 else int(end) for end in rings]


class Checkpointer:
    """Takes a worker's checkpoints by the ``journal.checkpoint_*`` settings and writes them on a
    background thread (one at a time: one falling due while the last is still being written waits
    for the next tick), keeping the newest ``checkpoint_keep`` of the run."""

    def __init__(self, directory: Path, *, run: int, config: JournalConfig):
        self.directory = directory
        self.run = run
        self.config = config
        self._last_at = time.monotonic()
        self._last_records = 0
        self._last_position: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._spare: dict | None = None
        """The last state written: the next capture copies into its arrays (memory already touched)."""
        self.taken = 0
        """Checkpoints written by this worker's life."""
        self.copy_seconds = 0.0
        """The worker's time spent copying its state for the last one."""
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.config.checkpoint_interval is not None or self.config.checkpoint_records is not None

    def due(self, records: int) -> bool:
        """Whether one is due, `records` being the records journaled by this worker's life."""
        config = self.config
        if config.checkpoint_interval is not None and time.monotonic() - self._last_at >= config.checkpoint_interval:
            return True
        return config.checkpoint_records is not None and records - self._last_records >= config.checkpoint_records

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take(self, worker: Worker, ends: list[int | None]) -> bool:
        """Capture the worker's state and start writing it; False if nothing changed since the last
        one or the last one is still being written."""
        journal = worker.journal
        assert journal is not None
        if self.busy() or journal.path is None:
            return False
        position = (journal.path.name, journal.end)
        self._last_at, self._last_records = time.monotonic(), journal.records
        if position == self._last_position:
            return False
        began = time.perf_counter()
        state = capture(worker, ends, self._spare)
        self._spare = None
        self.copy_seconds = time.perf_counter() - began
        self._last_position = position
        day = journal.day
        assert day is not None
        self._thread = threading.Thread(target=self._write, args=(day, journal.end, state),
                                        name="checkpoint", daemon=True)
        self._thread.start()
        return True

    def _write(self, day: int, offset: int, state: dict) -> None:
        try:
            write_checkpoint(self.directory, run=self.run, day=day, offset=offset, state=state)
            prune(self.directory, self.run, keep=self.config.checkpoint_keep)
            self.taken += 1
            self._spare = state
        except OSError as exc:  # a full disk: the journal still has everything; the next one may fit
            self.failed += 1
            log.error("checkpoint at %s:%d not written: %s", day, offset, exc)

    def close(self) -> None:
        """Wait (bounded) for a checkpoint being written."""
        if self._thread is not None:
            self._thread.join(_JOIN_SECONDS)
