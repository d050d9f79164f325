"""The replay vendor's parsing: one source per recorded file, read in chunks into records.

`DbnSource` reads ``.dbn``/``.dbn.zst`` through the shared DBN decoder (MBO drives a level
book); `TabularSource` reads CSV and Parquet through `streamctl.ingest.formats.tabular`. Both
map vendor symbols to the feed's stable instrument ids and never hold a whole file in memory.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Literal

import numpy as np

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError, InstrumentMap, metadata_symbols
from streamctl.ingest.formats.tabular import TabularError, iter_tabular
from streamctl.ingest.vendor_api import FeedContext, SessionError

if TYPE_CHECKING:
    from streamctl.ingest.vendors.replay.session import Session

__all__ = ["DbnSource", "TabularSource"]

_CHUNK_BYTES = 1 << 20
_KEEP_PLAIN_BYTES = 256 << 20
"""Decompressed bytes of files a looping replay keeps to read again."""
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class DbnSource:
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


class TabularSource:
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
