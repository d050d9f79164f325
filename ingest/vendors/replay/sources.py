"""The replay vendor's parsing: one source per recorded file, read in chunks into records.

`DbnSource` reads ``.dbn``/``.dbn.zst`` through the shared DBN decoder (MBO drives a level
book); `TabularSource` reads CSV and Parquet through `streamctl.ingest.formats.tabular`. Both
map vendor symbols to the feed's stable instrument ids and never hold a whole file in memory.
What outlives one file (ids produced, counters, a looping replay's cached bytes and book sizes)
is a `ReplayState` the session owns and hands to each source.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from streamctl.bus.wire import EventKind
from streamctl.ingest.formats.dbn.constants import ZSTD_MAGIC
from streamctl.ingest.formats.dbn.decoder import (
    DbnDecoder,
    DbnError,
    DecodedBatch,
    InstrumentMap,
    metadata_symbols,
)
from streamctl.ingest.formats.dbn.mbo_book import MboBook
from streamctl.ingest.formats.tabular import TabularError, iter_tabular
from streamctl.ingest.vendor_api import FeedContext, SessionError
from streamctl.ingest.vendors.replay.zstd_frames import ZstdFrames
from streamctl.shm.stats import CounterName

__all__ = ["ReplayState", "DbnSource", "TabularSource"]

_CHUNK_BYTES = 1 << 20
_KEEP_PLAIN_BYTES = 256 << 20
"""Decompressed bytes of files a looping replay keeps to read again."""


class _Reader(Protocol):
    """A file, a zstd stream reader or cached plain bytes: what `DbnSource` reads from."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class ReplayState:
    """What one replay keeps across its files and loops: the session owns it, sources update it."""

    wanted: set[str] | None = None
    """The feed's symbol filter (None: every symbol)."""
    looping: bool = False
    """Whether the files are read again (worth keeping their plain bytes)."""
    produced: set[int] = field(default_factory=set)
    """Our ids of the instruments the replay has resolved for output."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Well-formed DBN records of types not converted, by type (also announced as events)."""
    anomalies: dict[str, int] = field(default_factory=dict)
    """MBO events inconsistent with the book, by kind (also announced as events)."""
    announced: set[str] = field(default_factory=set)
    """Skip reasons already announced as an event (each once per replay)."""
    plain: dict[str, bytes] = field(default_factory=dict)
    """Decompressed bytes of files a looping replay reads again (up to `_KEEP_PLAIN_BYTES`)."""
    books: dict[str, MboBook] = field(default_factory=dict)
    """Last MBO book per file, so a looping replay starts with tables of the right size."""

    def instrument_id(self, ctx: FeedContext, symbol: str) -> int:
        """Our id for `symbol`, or 0 when the feed's symbol filter excludes it."""
        if self.wanted is not None and symbol not in self.wanted:
            return 0
        our = ctx.instrument_id(symbol)
        self.produced.add(our)
        return our


class DbnSource:
    """One DBN file (.dbn or .dbn.zst) read 1 MiB at a time."""

    def __init__(self, path: str, ctx: FeedContext, state: ReplayState):
        self._path = path
        self._ctx = ctx
        self._state = state
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._size = os.fstat(self._fh.fileno()).st_size
        head = self._fh.read(4)
        self._fh.seek(0)
        self._reader: _Reader = self._fh
        # A looping replay decompresses a small file once and keeps the plain bytes.
        self._keep: list[bytes] | None = [] if state.looping and path not in state.plain else None
        if path in state.plain:
            self._reader = io.BytesIO(state.plain[path])
        elif head == ZSTD_MAGIC:
            self._reader = ZstdFrames(self._fh, chunk=_CHUNK_BYTES)
        previous = state.books.get(path)
        self._decoder = DbnDecoder(ts_recv="record", book=previous.sized_like() if previous is not None else None)
        state.books[path] = self._decoder.book
        self._symbols: dict[int, str] = {}
        self._imap = InstrumentMap()
        self._eof = False
        self._records = 0
        """Records decoded from this file so far (before the symbol filter)."""
        self._failure: SessionError | None = None
        """Why the file ended early (cut short, empty), raised once its last records are out."""

    @property
    def fraction(self) -> float:
        if isinstance(self._reader, io.BytesIO):
            return 1.0 if self._eof else self._reader.tell() / max(len(self._reader.getbuffer()), 1)
        read = self._reader.position if isinstance(self._reader, ZstdFrames) else self._fh.tell()
        return 1.0 if self._eof or not self._size else min(read / self._size, 1.0)

    def read(self) -> np.ndarray | None:
        """The next decoded records (possibly empty), None at the end of the file.

        Raises `SessionError` (no retry) after the last records of a file that was cut short
        (a zstd frame, the metadata or the last record) or is empty.
        """
        if self._failure is not None:
            raise self._failure
        if self._eof:
            return None
        unreadable = False
        try:
            chunk = self._reader.read(_CHUNK_BYTES)
        except Exception as exc:  # zstd corruption, I/O error
            self._ctx.count(CounterName.MALFORMED)
            self._ctx.event(EventKind.ERROR, f"`{self._path}`: cannot read further: {exc}")
            chunk = b""
            unreadable = True
            self._keep = None
        if self._keep is not None:
            self._keep.append(chunk)
            if not chunk:
                self._state.plain[self._path] = b"".join(self._keep)
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
            if not chunk and self._decoder.metadata is None:
                raise self._cut_short("truncated: DBN metadata cut short") from None
            raise SessionError(f"`{self._path}`: {exc}", retry=False) from None
        if self._decoder.metadata is not None and not self._symbols:
            self._symbols = metadata_symbols(self._decoder.metadata)
        self._records += len(batch.records)
        if self._eof and not unreadable:
            self._failure = self._end_problem(batch)
        self._account(batch)
        return self._map(batch.records)

    def _end_problem(self, last: DecodedBatch) -> SessionError | None:
        """What is wrong with how the file ended, if anything (a corrupt zstd stream was
        already reported as an error event; this is about input that simply stops)."""
        if isinstance(self._reader, ZstdFrames) and self._reader.cut_short:
            return self._cut_short("truncated: zstd frame cut short")
        if last.truncated:
            return self._cut_short(f"truncated: last DBN record cut short ({last.truncated} bytes)")
        if self._decoder.metadata is None:
            return self._cut_short("is empty")
        return None

    def _cut_short(self, what: str) -> SessionError:
        """The failure of a file that ends early; the base name keeps status `detail` short."""
        return SessionError(f"`{os.path.basename(self._path)}` {what}; {self._records} records read", retry=False)

    def _account(self, batch: DecodedBatch) -> None:
        ctx, announced = self._ctx, self._state.announced
        for vendor_id, symbol in batch.mappings:
            if self._symbols.get(vendor_id) != symbol:
                self._symbols[vendor_id] = symbol
                self._imap.add(vendor_id, self._resolve(vendor_id))
        if batch.malformed:
            ctx.count(CounterName.MALFORMED, batch.malformed)
            ctx.event(EventKind.MALFORMED, f"`{self._path}`: undecodable DBN records skipped")
        for code, message in batch.errors:
            ctx.count(CounterName.ERRORS)
            ctx.event(EventKind.ERROR, f"`{self._path}`: {message}", code=code)
        for name in list(batch.skipped) + [f"book:{k}" for k in batch.anomalies]:
            if name not in announced:
                announced.add(name)
                ctx.event(EventKind.SKIPPED, f"`{self._path}`: `{name}` records are not converted" if not name.startswith("book:")
                          else f"`{self._path}`: MBO events inconsistent with the book ({name[5:]})")
        _add_counts(self._state.skipped, batch.skipped)
        _add_counts(self._state.anomalies, batch.anomalies)

    def _resolve(self, vendor_id: int) -> int:
        """Our id for a vendor id, or 0 when the feed's symbol filter excludes it."""
        return self._state.instrument_id(self._ctx, self._symbols.get(vendor_id) or str(vendor_id))

    def _map(self, records: np.ndarray) -> np.ndarray:
        if not len(records):
            return records
        # One compiled pass rewrites the column in place. It stops at a vendor id not seen
        # before: every new id of the rest of the chunk is then registered at once (only such
        # a chunk pays the `np.unique`) and the pass goes on from there.
        ids = records["instrument_id"]
        done, zeros = self._imap.map_in_place(ids)
        if done < len(ids):
            rest = ids[done:]
            _, unknown = self._imap.lookup(rest)
            for vendor_id in np.unique(rest[unknown]).tolist():
                self._imap.add(vendor_id, self._resolve(vendor_id))
            done, more = self._imap.map_in_place(ids, done)
            zeros += more
        return records[ids != 0] if zeros else records

    def close(self) -> None:
        if self._reader is not self._fh:
            self._reader.close()
        self._fh.close()


class TabularSource:
    """One CSV or Parquet file, in chunks of rows."""

    def __init__(self, path: str, fmt: Literal["csv", "parquet"], ctx: FeedContext, state: ReplayState):
        self._path = path
        self._ctx = ctx
        self._state = state
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
            self._ctx.count(CounterName.MALFORMED, batch.malformed)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(batch.reasons.items()))
            self._ctx.event(EventKind.MALFORMED, f"`{self._path}`: rows skipped ({detail})")
        ids = np.array([self._id(s) for s in batch.symbols] or [0], np.uint32)
        records = batch.records
        records["instrument_id"] = ids[records["instrument_id"]]
        keep = records["instrument_id"] != 0
        return records if keep.all() else records[keep]

    def _id(self, symbol: str) -> int:
        if symbol not in self._ids:
            self._ids[symbol] = self._state.instrument_id(self._ctx, symbol)
        return self._ids[symbol]

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for name, n in counts.items():
        into[name] = into.get(name, 0) + n
