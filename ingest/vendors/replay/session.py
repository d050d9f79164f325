"""The ``replay`` vendor: plays DBN, CSV and Parquet files into the plant.

Files are read in chunks (never whole into memory), decoded with `streamctl.ingest.formats.dbn.decoder` or
`streamctl.ingest.formats.tabular`, mapped to the feed's stable instrument ids and handed out in
batches, either as fast as the ring takes them (``speed: max``) or paced by ``ts_event`` at
a multiple of real time. Replaying the same files gives the same records, bit for bit: DBN
``ts_recv`` is the recorded one, and a looping replay restarts every file (and its MBO book)
from scratch and does not shift timestamps, so every loop yields identical records.

Pacing uses the running maximum of ``ts_event`` (out-of-order events never wait) and skips
records flagged SNAPSHOT (a book snapshot is state, not time: it goes out at once).

A file that ends early (a zstd frame, the metadata or the last record cut short) or is empty
fails the session once its complete records are out. A restarted feed calls `Session.resume`:
the files are decoded again from the start and what was delivered goes out unpaced.
"""

from __future__ import annotations

import os
import time

import numpy as np

from streamctl.ingest.formats.tabular import detect_format
from streamctl.ingest.vendor_api import EndOfInput, FeedContext, SessionError
from streamctl.ingest.vendors.replay.options import Options
from streamctl.ingest.vendors.replay.sources import DbnSource, ReplayState, TabularSource
from streamctl.shm.records import RECORD_DTYPE, Flag

__all__ = ["Session"]


class Session:
    """Replays `Options.files` in order; see the module docstring for the guarantees."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        symbols = getattr(feed, "symbols", None)
        self._state = ReplayState(wanted=set(symbols) if symbols else None, looping=options.loop)
        self._sizes = [0] * len(options.files)
        self._file = -1
        self._source: DbnSource | TabularSource | None = None
        self._pending = np.zeros(0, RECORD_DTYPE)
        self._pace = np.zeros(0, np.int64)
        self._pos = 0
        self._loop_records = 0
        self._ahead = 0
        """Records still to hand out unpaced: delivered before a restart (see `resume`)."""
        self.loops = 0
        """Completed passes over all files."""
        self._t0: int | None = None
        self._reset_clock()

    # ---- FeedSession face
    def open(self) -> None:
        for i, path in enumerate(self._opt.files):
            try:
                self._sizes[i] = os.path.getsize(path)
            except OSError as exc:
                raise SessionError(f"`files[{i}]` cannot be read: {exc.strerror or exc}; was {path}", retry=False) from None
        self._file = -1
        self._next_file()

    def poll(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while self._pos >= len(self._pending):
            if not self._refill():
                raise EndOfInput(f"replayed {len(self._opt.files)} file(s)")
            if time.monotonic() > deadline and self._pos >= len(self._pending):
                return None
        end = min(self._pos + self._opt.batch, len(self._pending))
        if self._ahead:
            end = min(end, self._pos + self._ahead)
            self._ahead -= end - self._pos
            self._t0 = None  # pacing starts again at the first record not yet delivered
        elif self._opt.speed != "max":
            end = self._due(end, deadline)
            if end <= self._pos:
                return None
        out = self._pending[self._pos : end]  # a view: each chunk is a fresh array, never written again
        self._pos = end
        if end >= len(self._pending):
            self._pending = self._pending[:0]
            self._pos = 0
        return out

    def resume(self, delivered: int) -> None:
        """This feed was restarted after `delivered` records reached its rings: replay from
        the start (an MBO book must see every record) but hand those out without pacing; the
        feed loop drops them again, exactly, ring by ring."""
        self._ahead = delivered

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def instruments(self) -> list[int]:
        """Ids of the instruments this session has resolved for output (the filter applied)."""
        return sorted(self._state.produced)

    # ---- counters
    @property
    def skipped(self) -> dict[str, int]:
        """Well-formed DBN records of types not converted, by type (also announced as events)."""
        return self._state.skipped

    @property
    def anomalies(self) -> dict[str, int]:
        """MBO events inconsistent with the book, by kind (also announced as events)."""
        return self._state.anomalies

    # ---- internals
    def _next_file(self) -> bool:
        self.close()
        self._file += 1
        if self._file >= len(self._opt.files):
            return False
        path = self._opt.files[self._file]
        fmt = detect_format(path) if self._opt.format == "auto" else self._opt.format
        try:
            if fmt == "dbn":
                self._source = DbnSource(path, self._ctx, self._state)
            else:
                self._source = TabularSource(path, fmt, self._ctx, self._state)  # type: ignore[arg-type]
        except OSError as exc:
            raise SessionError(f"`files[{self._file}]` cannot be read: {exc.strerror or exc}; was {path}", retry=False) from None
        return True

    def _refill(self) -> bool:
        """Read the next non-empty chunk into the pending buffer; False at the very end."""
        while True:
            records = self._source.read() if self._source is not None else None
            self._report()
            if records is None:
                if self._next_file():
                    continue
                if not self._opt.loop or self._loop_records == 0:
                    return False
                self.loops += 1
                self._loop_records = 0
                self._reset_clock()
                self._file = -1
                self._next_file()
                continue
            if len(records):
                self._loop_records += len(records)
                self._pending = records
                self._pos = 0
                if self._opt.speed != "max":
                    self._pace = self._pace_times(records)
                return True

    def _report(self) -> None:
        done = float(sum(self._sizes[: max(self._file, 0)]))
        if self._source is not None and 0 <= self._file < len(self._sizes):
            done += self._sizes[self._file] * self._source.fraction
        self._ctx.progress(done, float(sum(self._sizes)))

    def _reset_clock(self) -> None:
        self._t0 = None
        self._wall0 = 0.0
        self._clock = np.iinfo(np.int64).min

    def _pace_times(self, records: np.ndarray) -> np.ndarray:
        """Pacing time of each record: running max of ts_event, snapshots not advancing it."""
        ts = records["ts_event"].astype(np.int64)
        live = (records["flags"] & Flag.SNAPSHOT) == 0
        ts = np.where(live, ts, np.iinfo(np.int64).min)
        ts[0] = max(ts[0], self._clock)
        pace = np.maximum.accumulate(ts)
        self._clock = int(pace[-1])
        return pace

    def _due(self, end: int, deadline: float) -> int:
        """How far into the pending records we may go now, sleeping (up to `deadline`) for the first."""
        speed = float(self._opt.speed)  # type: ignore[arg-type]
        pace = self._pace
        if self._t0 is None:
            first = np.flatnonzero(pace[self._pos : end] > np.iinfo(np.int64).min)
            if not len(first):
                return end  # only snapshot records so far: no time has started
            self._t0 = int(pace[self._pos + first[0]])
            self._wall0 = time.monotonic()
        while True:
            now = time.monotonic()
            limit = self._t0 + (now - self._wall0) * speed * 1e9
            n_due = int(np.searchsorted(pace[self._pos : end], limit, side="right"))
            if n_due > 0 or now >= deadline:
                return self._pos + n_due
            wait = (int(pace[self._pos]) - limit) / (speed * 1e9)
            time.sleep(max(min(wait, deadline - now), 0.0))
