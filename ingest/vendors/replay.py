"""The ``replay`` vendor: plays DBN, CSV and Parquet files into the plant.

Files are read in chunks (never whole into memory), decoded with `streamctl.ingest.dbn` or
`streamctl.ingest.tabular`, mapped to the feed's stable instrument ids and handed out in
batches, either as fast as the ring takes them (``speed: max``) or paced by ``ts_event`` at
a multiple of real time. Replaying the same files gives the same records, bit for bit: DBN
``ts_recv`` is the recorded one, and a looping replay restarts every file (and its MBO book)
from scratch and does not shift timestamps, so every loop yields identical records.

Pacing uses the running maximum of ``ts_event`` (out-of-order events never wait) and skips
records flagged SNAPSHOT (a book snapshot is state, not time: it goes out at once).
"""

from __future__ import annotations

import io
import os
import time
from typing import Annotated, Literal

import msgspec
import numpy as np
from msgspec import Meta

from streamctl.ingest.dbn import DbnDecoder, DbnError, InstrumentMap, metadata_symbols
from streamctl.ingest.session import EndOfInput, FeedContext, SessionError
from streamctl.ingest.tabular import TabularError, detect_format, iter_tabular
from streamctl.shm.records import RECORD_DTYPE, Flag

__all__ = ["Options", "Session"]

_CHUNK_BYTES = 1 << 20
_KEEP_PLAIN_BYTES = 256 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Options(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    files: Annotated[list[str], Meta(min_length=1)]
    """Input files, replayed in order (paths relative to the working directory)."""
    speed: Literal["max"] | Annotated[float, Meta(gt=0)] = "max"
    """``max``: as fast as possible; a number: that multiple of real time, by ``ts_event``."""
    loop: bool = False
    """Start again from the first file at the end (ids and records identical every loop)."""
    format: Literal["auto", "dbn", "csv", "parquet"] = "auto"
    """``auto``: by extension (.dbn, .dbn.zst, .csv, .parquet)."""
    batch: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096
    """Most records handed out per poll."""

    def check(self) -> tuple[str, str, object] | None:
        for i, path in enumerate(self.files):
            if not os.path.isfile(path):
                return f"files[{i}]", "does not exist", path
            if self.format == "auto" and detect_format(path) is None:
                return f"files[{i}]", "has an unknown extension (use .dbn, .dbn.zst, .csv, .parquet or set `format`)", path
        return None


class _DbnSource:
    """One DBN file (.dbn or .dbn.zst) read 1 MiB at a time."""

    def __init__(self, path: str, ctx: FeedContext, wanted: set[str] | None, session: Session):
        self._path = path
        self._ctx = ctx
        self._wanted = wanted
        self._session = session
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._size = os.fstat(self._fh.fileno()).st_size
        head = self._fh.read(4)
        self._fh.seek(0)
        self._reader: io.BufferedIOBase = self._fh
        # A looping replay decompresses a small file once and keeps the plain bytes.
        self._keep: list[bytes] | None = [] if session.looping and path not in session._plain else None
        if path in session._plain:
            self._reader = io.BytesIO(session._plain[path])
        elif head == _ZSTD_MAGIC:
            import zstandard

            self._reader = zstandard.ZstdDecompressor().stream_reader(self._fh, read_across_frames=True)
        previous = session._books.get(path)
        self._decoder = DbnDecoder(ts_recv="record", book=previous.sized_like() if previous is not None else None)
        session._books[path] = self._decoder.book
        self._symbols: dict[int, str] = {}
        self._imap = InstrumentMap()
        self._eof = False

    @property
    def fraction(self) -> float:
        if isinstance(self._reader, io.BytesIO):
            return 1.0 if self._eof else self._reader.tell() / max(len(self._reader.getbuffer()), 1)
        return 1.0 if self._eof or not self._size else min(self._fh.tell() / self._size, 1.0)

    def read(self) -> np.ndarray | None:
        """The next decoded records (possibly empty), None at the end of the file."""
        if self._eof:
            return None
        try:
            chunk = self._reader.read(_CHUNK_BYTES)
        except Exception as exc:  # zstd corruption, I/O error
            self._ctx.count("malformed")
            self._ctx.event("error", f"`{self._path}`: cannot read further: {exc}")
            chunk = b""
            self._keep = None
        if self._keep is not None:
            self._keep.append(chunk)
            if not chunk:
                self._session._plain[self._path] = b"".join(self._keep)
            elif len(self._keep) * _CHUNK_BYTES > _KEEP_PLAIN_BYTES:
                self._keep = None
        try:
            if chunk:
                self._decoder.write(chunk)
                batch = self._decoder.decode()
            else:
                self._eof = True
                batch = self._decoder.finish()
        except DbnError as exc:
            raise SessionError(f"`{self._path}`: {exc}", retry=False) from None
        if self._decoder.metadata is not None and not self._symbols:
            self._symbols = metadata_symbols(self._decoder.metadata)
        self._account(batch)
        return self._map(batch.records)

    def _account(self, batch) -> None:
        ctx, seen = self._ctx, self._session._seen
        for vendor_id, symbol in batch.mappings:
            if self._symbols.get(vendor_id) != symbol:
                self._symbols[vendor_id] = symbol
                self._imap.add(vendor_id, self._resolve(vendor_id))
        if batch.malformed:
            ctx.count("malformed", batch.malformed)
            ctx.event("malformed", f"`{self._path}`: undecodable DBN records skipped")
        for code, message in batch.errors:
            ctx.count("errors")
            ctx.event("error", f"`{self._path}`: {message}", code=code)
        for name in list(batch.skipped) + [f"book:{k}" for k in batch.anomalies]:
            if name not in seen:
                seen.add(name)
                ctx.event("skipped", f"`{self._path}`: `{name}` records are not converted" if not name.startswith("book:")
                          else f"`{self._path}`: MBO events inconsistent with the book ({name[5:]})")
        for k, v in batch.skipped.items():
            self._session.skipped[k] = self._session.skipped.get(k, 0) + v
        for k, v in batch.anomalies.items():
            self._session.anomalies[k] = self._session.anomalies.get(k, 0) + v

    def _resolve(self, vendor_id: int) -> int:
        """Our id for a vendor id, or 0 when the feed's symbol filter excludes it."""
        symbol = self._symbols.get(vendor_id) or str(vendor_id)
        if self._wanted is not None and symbol not in self._wanted:
            return 0
        our = self._ctx.instrument_id(symbol)
        self._session._produced.add(our)
        return our

    def _map(self, records: np.ndarray) -> np.ndarray:
        if not len(records):
            return records
        # Register new vendor ids first, then remap once: assigning a structured sub-array
        # back (records[unknown] = sub) copies field by field and cost more than the decode.
        for vendor_id in np.unique(records["instrument_id"]).tolist():
            if vendor_id not in self._imap:
                self._imap.add(vendor_id, self._resolve(vendor_id))
        self._imap.apply(records)
        keep = records["instrument_id"] != 0
        return records if keep.all() else records[keep]

    def close(self) -> None:
        if self._reader is not self._fh:
            self._reader.close()
        self._fh.close()


class _TabularSource:
    """One CSV or Parquet file, in chunks of rows."""

    def __init__(self, path: str, fmt: Literal["csv", "parquet"], ctx: FeedContext, wanted: set[str] | None,
                 produced: set[int]):
        self._path = path
        self._ctx = ctx
        self._wanted = wanted
        self._produced = produced
        self._chunks = iter_tabular(path, format=fmt)
        self._ids: dict[str, int] = {}
        self._fraction = 0.0

    @property
    def fraction(self) -> float:
        return self._fraction

    def read(self) -> np.ndarray | None:
        try:
            batch = next(self._chunks)
        except StopIteration:
            self._fraction = 1.0
            return None
        except (TabularError, OSError) as exc:
            raise SessionError(f"`{self._path}`: {exc}", retry=False) from None
        self._fraction = batch.position
        if batch.malformed:
            self._ctx.count("malformed", batch.malformed)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(batch.reasons.items()))
            self._ctx.event("malformed", f"`{self._path}`: rows skipped ({detail})")
        ids = np.array([self._id(s) for s in batch.symbols] or [0], np.uint32)
        records = batch.records
        records["instrument_id"] = ids[records["instrument_id"]]
        keep = records["instrument_id"] != 0
        return records if keep.all() else records[keep]

    def _id(self, symbol: str) -> int:
        if symbol not in self._ids:
            ok = self._wanted is None or symbol in self._wanted
            self._ids[symbol] = self._ctx.instrument_id(symbol) if ok else 0
            if ok:
                self._produced.add(self._ids[symbol])
        return self._ids[symbol]

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class Session:
    """Replays `Options.files` in order; see the module docstring for the guarantees."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        symbols = getattr(feed, "symbols", None)
        self._wanted = set(symbols) if symbols else None
        self._sizes = [0] * len(options.files)
        self._file = -1
        self._source: _DbnSource | _TabularSource | None = None
        self._pending = np.zeros(0, RECORD_DTYPE)
        self._pace = np.zeros(0, np.int64)
        self._pos = 0
        self._produced: set[int] = set()
        self._books: dict[str, object] = {}
        self._plain: dict[str, bytes] = {}
        """Decompressed bytes of files a looping replay reads again (up to `_KEEP_PLAIN_BYTES`)."""
        """Last MBO book per file, so a looping replay starts with tables of the right size."""
        self._loop_records = 0
        self._seen: set[str] = set()
        self.skipped: dict[str, int] = {}
        """Well-formed DBN records of types not converted, by type (also announced as events)."""
        self.anomalies: dict[str, int] = {}
        """MBO events inconsistent with the book, by kind (also announced as events)."""
        self.loops = 0
        """Completed passes over all files."""
        self._reset_clock()

    # ---- FeedSession
    def open(self) -> None:
        for i, path in enumerate(self._opt.files):
            try:
                self._sizes[i] = os.path.getsize(path)
            except OSError as exc:
                raise SessionError(f"`files[{i}]` cannot be read: {exc.strerror or exc}; was {path}", retry=False) from None
        self._file = -1
        self._next_file()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    @property
    def looping(self) -> bool:
        return self._opt.loop

    def instruments(self) -> list[int]:
        """Ids of the instruments this session has resolved for output (the filter applied)."""
        return sorted(self._produced)

    def poll(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while self._pos >= len(self._pending):
            if not self._refill():
                raise EndOfInput(f"replayed {len(self._opt.files)} file(s)")
            if time.monotonic() > deadline and self._pos >= len(self._pending):
                return None
        end = min(self._pos + self._opt.batch, len(self._pending))
        if self._opt.speed != "max":
            end = self._due(end, deadline)
            if end <= self._pos:
                return None
        out = self._pending[self._pos : end]  # a view: each chunk is a fresh array, never written again
        self._pos = end
        if end >= len(self._pending):
            self._pending = self._pending[:0]
            self._pos = 0
        return out

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
                self._source = _DbnSource(path, self._ctx, self._wanted, self)
            else:
                self._source = _TabularSource(path, fmt, self._ctx, self._wanted, self._produced)  # type: ignore[arg-type]
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
        done = sum(self._sizes[: max(self._file, 0)])
        if self._source is not None and 0 <= self._file < len(self._sizes):
            done += self._sizes[self._file] * self._source.fraction
        self._ctx.progress(float(done), float(sum(self._sizes)))

    def _reset_clock(self) -> None:
        self._t0: int | None = None
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
