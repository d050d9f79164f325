"""Appending to a partition's journal: one copy per batch, a file per event-time day.

`JournalWriter` appends entries (`files`) to the file of the current day, opening the next
day's file when a batch's last event time enters a new UTC day (never more than one day ahead
of the wall clock: one record dated far in the future does not roll the journal into it), and
syncs by the configured policy. The copy goes into pages of a shared mapping that a thread
faulted in ahead (`mapped`), so a batch costs the worker a ``memcpy``, not a ``write``.
`PublishedMark` is the count of messages the worker has handed to ZeroMQ, kept in a file
mapping so it survives the worker being killed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from streamctl.process.journal.files import (
    CLOCK,
    FLUSH,
    LINE,
    RECORDS,
    SYMBOL,
    FileHeader,
    day_of,
    entry_header,
    expire,
    file_name,
    pad,
)
from streamctl.process.journal.mapped import MappedAppender
from streamctl.process.journal.settings import JournalConfig
from streamctl.shm.records import RECORD_DTYPE

__all__ = ["JournalWriter", "PublishedMark"]

_ZEROS = bytes(LINE)


class JournalWriter:
    """One partition's journal for one plant run.

    Parameters
    ----------
    directory
        The partition's journal directory (created if missing).
    partition, run
        Written into each file header; `run` (the supervisor's start, ns) also names the files.
    config
        The ``journal:`` settings (retention and sync policy).
    """

    def __init__(self, directory: Path, *, partition: int, run: int, config: JournalConfig):
        self.directory = directory
        self.partition = partition
        self.run = run
        self.config = config
        directory.mkdir(parents=True, exist_ok=True)
        self.day: int | None = None
        self.path: Path | None = None
        self._file: MappedAppender | None = None
        self._last_sync = time.monotonic()
        self._dirty = False
        self._symbols: list[bytes] = []
        """SYMBOL entries waiting for the batch that needs them (one write, that batch's file)."""
        self.records = 0
        """Records appended by this writer."""
        self.bytes = 0
        """Bytes appended by this writer."""
        self._room: np.ndarray | None = None
        """The records `reserve_records` lent, until the next append."""

    @property
    def end(self) -> int:
        """The current file's length in whole entries: where the next entry goes (a checkpoint
        names this offset)."""
        return 0 if self._file is None else self._file.end

    def reserve_records(self, max_records: int) -> np.ndarray | None:
        """Room for up to `max_records` records in the journal itself, for the ring to copy its
        next batch into (``Ring.consume(out=...)``): then `append_records` of that batch only
        writes its header, and the batch is never copied twice. None before the first batch
        opened a file (its day names the file) or if the room does not fit the mapping."""
        if self._file is None:
            return None
        room = self._file.reserve(LINE + max_records * LINE)
        self._room = None if room is None else room[LINE:].view(RECORD_DTYPE)
        return self._room

    def append_records(self, ring: int, position: int, records: np.ndarray, messages_before: int) -> np.ndarray:
        """One batch of ring `ring`, whose first record was at read position `position`; returns
        the batch where it now lies. A batch the ring copied into `reserve_records`' room stays
        there, unless symbol entries must go before it or it opens a new day's file: then it is
        copied as any other batch (and the copy is returned: the room is gone)."""
        n = len(records)
        day = day_of(int(records["ts_event"][-1]))
        room, self._room = self._room, None
        header = entry_header(RECORDS, ring, n, n * LINE, position, messages_before, time.time_ns())
        if room is not None and len(records) and np.may_share_memory(records, room):
            if not self._symbols and not self._rolls(day):
                assert self._file is not None
                self._file.commit(header, LINE + n * LINE)
                self._wrote(LINE + n * LINE)
                self.records += n
                return records
            records = records.copy()
        self._roll(day)
        self._write(header, np.ascontiguousarray(records).view(np.uint8).data)
        self.records += n
        return records

    def append_clock(self, clocks: np.ndarray, messages_before: int) -> None:
        """The per-symbol clocks of an `on_clock` call that closed bars."""
        body = np.ascontiguousarray(clocks, dtype=np.int64).tobytes()
        size = pad(len(body))
        self._roll(None)
        self._write(entry_header(CLOCK, 0, len(clocks), size, 0, messages_before, time.time_ns()),
                    body + _ZEROS[: size - len(body)])

    def append_symbol(self, ring: int, instrument: int, symbol: str, messages_before: int) -> None:
        """Ring `ring`'s `instrument` is `symbol`: written with the next entry, in the same write
        (the batch that needs it; so it lands in that batch's day file, just before it)."""
        raw = symbol.encode("ascii")
        if len(raw) >= LINE:
            raise ValueError(f"`symbol` must be under {LINE} bytes; was {symbol!r}")
        self._symbols.append(entry_header(SYMBOL, ring, instrument, LINE, 0, messages_before, time.time_ns())
                             + raw + _ZEROS[len(raw):])

    def append_flush(self, messages_before: int) -> None:
        """A clean stop flushed the open bars."""
        self._roll(None)
        self._write(entry_header(FLUSH, 0, 0, 0, 0, messages_before, time.time_ns()), b"")

    def tick(self) -> None:
        """Sync if the ``interval`` policy says it is time (the worker calls this from its clock)."""
        if self._dirty and self.config.sync == "interval" and \
                time.monotonic() - self._last_sync >= self.config.sync_interval:
            self._sync()

    def close(self) -> None:
        if self._file is not None:
            self._file.close(sync=self._dirty and self.config.sync != "none")
            self._file = None
            self._dirty = False

    # ------------------------------------------------------------------ internals

    def _write(self, header: bytes, body: bytes | memoryview) -> None:
        parts = [*self._symbols, header, body]
        self._symbols.clear()
        assert self._file is not None
        self._room = None  # written over
        self._wrote(self._file.append(parts))

    def _wrote(self, size: int) -> None:
        self.bytes += size
        self._dirty = True
        if self.config.sync == "batch":
            self._sync()

    def _sync(self) -> None:
        assert self._file is not None
        self._file.sync()
        self._dirty = False
        self._last_sync = time.monotonic()

    def _rolls(self, event_day: int | None) -> bool:
        """Whether `_roll(event_day)` would open a file."""
        return self._file is None or not (event_day is None or self.day is None or event_day <= self.day
                                          or event_day > day_of(time.time_ns()) + 1)

    def _roll(self, event_day: int | None) -> None:
        """Open the file for `event_day` (None: stay on the current one) if it is a later day."""
        if not self._rolls(event_day):
            return
        wall_day = day_of(time.time_ns())
        if event_day is None or event_day > wall_day + 1:
            event_day = wall_day if self.day is None else self.day
        self.close()
        self.day = event_day
        self.path = self.directory / file_name(event_day, self.run)
        size = self.path.stat().st_size if self.path.exists() else 0  # the day came back (a clock step): append
        self._file = MappedAppender(self.path, size)
        if size == 0:
            self._file.append([FileHeader(self.partition, event_day, self.run, time.time_ns()).pack()])
        expire(self.directory, newest_day=event_day, retention_days=self.config.retention_days, keep_run=self.run)

    def resume(self, path: Path, day: int) -> None:
        """Append to `path` (the run's newest file, its tail already repaired) from now on."""
        self.close()
        self.day, self.path = day, path
        self._file = MappedAppender(path, path.stat().st_size)


class PublishedMark:
    """How many messages the worker has handed to ZeroMQ in this run: an int64 in a file the
    kernel keeps when the process is killed (``<run>.sent`` beside the journal)."""

    def __init__(self, directory: Path, run: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{run}.sent"
        if not self.path.exists() or self.path.stat().st_size != 8:
            self.path.write_bytes(bytes(8))
        self._map = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(1,))
        self.array: np.ndarray = self._map.view(np.ndarray)
        """The mark as a plain one-element array (what `Publisher.record_sent` stores into)."""

    @property
    def value(self) -> int:
        return int(self.array[0])
