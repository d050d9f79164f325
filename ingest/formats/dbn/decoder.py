"""Databento Binary Encoding (DBN v1/v2/v3) to streamctl records, without the `databento` package.

One decoder serves both file replay and the live gateway: bytes are `write`-n as they
arrive, `decode` returns everything complete so far and keeps a partial trailing record.

Conversion rules (documented in ``docs/replay.md``):

- trades (rtype 0x00): action ``T`` -> `Kind.TRADE` (side = aggressor: ``B`` -> BID,
  ``A`` -> ASK, ``N`` -> NONE); other actions are counted in ``skipped["trades:not-T"]``.
- mbp-1 / tbbo (rtype 0x01): every record -> a `Kind.QUOTE` of the top of book carried by the
  record (``UNDEF_PRICE`` passes through); a ``T`` record also -> a `Kind.TRADE`, emitted
  before its quote for mbp-1 (the quote is the book after the trade) and after it when the
  metadata schema is tbbo (the quote is the book before the trade). ``F`` is never a trade.
- mbo (rtype 0xA0): drives `MboBook`, which emits BOOK/RESET/TRADE records.
- symbol mapping (0x16) -> `DecodedBatch.mappings`; system (0x17) -> ``system``;
  error (0x15) -> ``errors``; other known record types are counted in ``skipped`` by name;
  an unknown rtype, an invalid action/side byte, a corrupt header or a truncated trailing
  record (at `finish`) counts in ``malformed`` (and its bytes in ``truncated``). A corrupt header resynchronizes on the next
  pair of valid headers; nothing decoded before the damage is lost.
- prices stay DBN's int64 1e-9 fixed point; ``sequence``, ``flags`` (F_LAST, F_SNAPSHOT,
  F_BAD_TS_RECV: the same bits as `Flag`) carry over; ``ts_event`` is the DBN ts_event
  (u64, so ``UNDEF_TIMESTAMP`` becomes -1); ``ts_recv`` per ``ts_recv=`` of the decoder.
"""

from __future__ import annotations

import io
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from streamctl.ingest.formats.dbn.constants import (
    MAPPING_OUT_SYMBOL,
    MIXED_SCHEMA,
    NO_STYPE,
    RECORD_SIZES,
    SCHEMA_NAMES,
    SCHEMAS,
    SYMBOL_CSTR_LEN,
    UNDEF_TIMESTAMP,
    ZSTD_MAGIC,
    RType,
)
from streamctl.ingest.formats.dbn.kernels import (
    N_STATS,
    STAT_MALFORMED,
    STAT_NOT_TRADE,
    convert,
    frame,
    remap,
)
from streamctl.ingest.formats.dbn.mbo_book import MBO_ANOMALIES, MboBook
from streamctl.shm.records import RECORD_DTYPE

__all__ = [
    "DbnError",
    "DbnMetadata",
    "DecodedBatch",
    "DbnDecoder",
    "InstrumentMap",
    "read_file",
    "read_metadata",
    "metadata_symbols",
]


class DbnError(ValueError):
    """The DBN input cannot be decoded at all (bad magic, unsupported version, bad metadata)."""


_HDR = [("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"), ("ts_event", "<u8")]
_MAPPING_V1 = [("in_sym", f"S{SYMBOL_CSTR_LEN[1]}", 16), ("out_sym", f"S{SYMBOL_CSTR_LEN[1]}", MAPPING_OUT_SYMBOL[1])]
_MAPPING_V2 = [("stype_out", "u1", 88), ("in_sym", f"S{SYMBOL_CSTR_LEN[2]}", 17),
               ("out_sym", f"S{SYMBOL_CSTR_LEN[2]}", MAPPING_OUT_SYMBOL[2])]
_SYSTEM_V1 = [("msg", "S64", 16)]
_SYSTEM_V2 = [("msg", "S303", 16), ("code", "u1", 319)]
_ERROR_V1 = [("msg", "S64", 16)]
_ERROR_V2 = [("msg", "S302", 16), ("code", "u1", 318)]


def _dtype(fields: list[tuple[str, str, int]], itemsize: int) -> np.dtype:
    base = [(n, t, o) for (n, t), o in zip(_HDR, (0, 1, 2, 4, 8), strict=True)] + fields
    return np.dtype(
        {"names": [f[0] for f in base], "formats": [f[1] for f in base], "offsets": [f[2] for f in base],
         "itemsize": itemsize}
    )


@dataclass(frozen=True)
class DbnMetadata:
    """The DBN metadata header (all versions normalized to one shape)."""

    version: int
    dataset: str
    schema: int | None
    start: int
    end: int | None
    limit: int
    stype_in: int | None
    stype_out: int
    ts_out: bool
    symbol_cstr_len: int
    symbols: list[str]
    partial: list[str]
    not_found: list[str]
    mappings: list[tuple[str, list[tuple[int, int, str]]]]
    """raw_symbol -> [(start_date YYYYMMDD, end_date YYYYMMDD, symbol)]."""

    @property
    def schema_name(self) -> str | None:
        return SCHEMA_NAMES[self.schema] if self.schema is not None and self.schema < len(SCHEMA_NAMES) else None


@dataclass
class DecodedBatch:
    """Everything one `DbnDecoder.decode` call completed."""

    records: np.ndarray
    """`RECORD_DTYPE`; ``instrument_id`` is the VENDOR's instrument id (remap with `InstrumentMap`)."""
    mappings: list[tuple[int, str]] = field(default_factory=list)
    """(vendor instrument id, symbol) from SymbolMappingMsg: ``stype_out_symbol``, or
    ``stype_in_symbol`` when the out symbol is empty or just the instrument id in digits."""
    system: list[tuple[int | None, str]] = field(default_factory=list)
    """(code, msg) of SystemMsg, heartbeats included; code is None in DBN v1."""
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    """(code, err) of ErrorMsg; code is None in DBN v1."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Well-formed records not converted, by record type name (``definition``, ``ohlcv``...)."""
    malformed: int = 0
    """Records that could not be decoded (unknown rtype, bad action/side, corrupt or truncated)."""
    anomalies: dict[str, int] = field(default_factory=dict)
    """Well-formed MBO events inconsistent with the book state (see `MBO_ANOMALIES`)."""
    consumed: int = 0
    """Input bytes consumed by this call (metadata included)."""
    truncated: int = 0
    """Bytes of a last record cut short by the end of the input (only from `finish`; that
    record also counts in ``malformed``): a file that ends here was cut, not finished."""

    def merge(self, other: DecodedBatch) -> DecodedBatch:
        """One batch holding both (records concatenated in order)."""
        skipped = dict(self.skipped)
        for k, v in other.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
        anomalies = dict(self.anomalies)
        for k, v in other.anomalies.items():
            anomalies[k] = anomalies.get(k, 0) + v
        return DecodedBatch(
            np.concatenate([self.records, other.records]), self.mappings + other.mappings,
            self.system + other.system, self.errors + other.errors, skipped,
            self.malformed + other.malformed, anomalies, self.consumed + other.consumed,
            self.truncated + other.truncated,
        )


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The whole file, zstd-decompressed (every frame) when it starts with the zstd magic."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] == ZSTD_MAGIC:
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as r:
                data = r.read()
        except zstandard.ZstdError as exc:
            raise DbnError(f"`{os.fspath(path)}` is not valid zstd: {exc}") from None
    return data


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def read_metadata(data: bytes | bytearray | memoryview) -> tuple[DbnMetadata, int]:
    """Parse the metadata header; returns it and the byte offset of the first record.

    Raises `DbnError` for a bad magic, an unsupported version or truncated/corrupt metadata.
    """
    mv = memoryview(data)
    if len(mv) < 8:
        raise DbnError(f"truncated DBN metadata: {len(mv)} bytes, need at least 8")
    if bytes(mv[:3]) != b"DBN":
        raise DbnError(f"not DBN: magic must be `DBN`, was `{bytes(mv[:3])!r}`")
    version = mv[3]
    if not 1 <= version <= 3:
        raise DbnError(f"unsupported DBN `version` {version}: this decoder reads 1, 2 and 3")
    (length,) = struct.unpack_from("<I", mv, 4)
    end = 8 + length
    if length < 104 or len(mv) < end:
        raise DbnError(f"truncated DBN metadata: `length` {length}, have {len(mv) - 8} bytes")
    dataset = _cstr(bytes(mv[8:24]))
    schema, start, end_ts, limit = struct.unpack_from("<HQQQ", mv, 24)
    if version == 1:
        stype_in, stype_out, ts_out = mv[58], mv[59], mv[60]
        cstr = 22
    else:
        stype_in, stype_out, ts_out = mv[50], mv[51], mv[52]
        (cstr,) = struct.unpack_from("<H", mv, 53)
    if not 1 <= cstr <= 255:
        raise DbnError(f"corrupt DBN metadata: `symbol_cstr_len` {cstr}")
    (sdl,) = struct.unpack_from("<I", mv, 108)
    pos = 112 + sdl

    def u32() -> int:
        nonlocal pos
        if pos + 4 > end:
            raise DbnError(f"corrupt DBN metadata: lists run past `length` {length}")
        (v,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        return v

    def sym() -> str:
        nonlocal pos
        if pos + cstr > end:
            raise DbnError(f"corrupt DBN metadata: lists run past `length` {length}")
        s = _cstr(bytes(mv[pos : pos + cstr]))
        pos += cstr
        return s

    lists = [[sym() for _ in range(u32())] for _ in range(3)]
    mappings = []
    for _ in range(u32()):
        raw = sym()
        intervals = []
        for _ in range(u32()):
            d0, d1 = u32(), u32()
            intervals.append((d0, d1, sym()))
        mappings.append((raw, intervals))
    meta = DbnMetadata(
        version=version, dataset=dataset, schema=None if schema == MIXED_SCHEMA else schema, start=start,
        end=None if end_ts == UNDEF_TIMESTAMP else end_ts, limit=limit,
        stype_in=None if stype_in == NO_STYPE else stype_in, stype_out=stype_out, ts_out=bool(ts_out),
        symbol_cstr_len=cstr, symbols=lists[0], partial=lists[1], not_found=lists[2], mappings=mappings,
    )
    return meta, end


def metadata_symbols(meta: DbnMetadata) -> dict[int, str]:
    """Vendor instrument id -> raw symbol from the metadata mappings (files with stype_out
    instrument_id map each raw symbol to the id in digits)."""
    out: dict[int, str] = {}
    for raw, intervals in meta.mappings:
        for _d0, _d1, sym in intervals:
            if sym.isdigit():
                out.setdefault(int(sym), raw)
    return out


class DbnDecoder:
    """Incremental DBN decoder.

    `write` bytes as they arrive (live TCP) or all at once (file); `decode` returns everything
    complete so far, keeping a partial trailing record for the next write. Handles the metadata
    first, then records; v1/v2/v3 record layouts (v1 SymbolMappingMsg has 22-char symbols, v1
    SystemMsg/ErrorMsg have no code); ``ts_out=1`` (8 extra bytes per record). The MBO book
    state persists across calls.

    ``ts_recv="record"``: our ``ts_recv`` is the DBN record's ts_recv (deterministic replay);
    ``"now"``: `time.time_ns` at decode (live ingest time). Records without a ts_recv
    (none of the converted types) use ts_event.
    """

    def __init__(self, *, ts_recv: Literal["record", "now"] = "record", book: MboBook | None = None):
        if ts_recv not in ("record", "now"):
            raise ValueError(f"`ts_recv` must be record or now; was {ts_recv}")
        self._now = ts_recv == "now"
        self.metadata: DbnMetadata | None = None
        self._chunks: list[bytes] = []
        self._pending = 0
        self._resyncing = False
        self._sizes = np.zeros(256, np.int64)
        self._book = book if book is not None else MboBook()
        self._dtypes: dict[int, np.dtype] = {}
        self._tbbo = False

    @property
    def pending(self) -> int:
        """Bytes written but not decoded yet (an incomplete record or metadata)."""
        return self._pending

    @property
    def book(self) -> MboBook:
        """The MBO book state built so far."""
        return self._book

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue input bytes (copied unless `bytes`)."""
        if data:
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self._pending += len(data)

    def decode(self) -> DecodedBatch:
        """Decode every complete record written so far (raises `DbnError` on bad metadata)."""
        data = self._take()
        batch = DecodedBatch(np.empty(0, RECORD_DTYPE))
        pos = 0
        if self.metadata is None:
            if len(data) >= 4 and data[:3] != b"DBN" or len(data) >= 4 and not 1 <= data[3] <= 3:
                read_metadata(data)  # raises the precise error
            if len(data) < 8 or len(data) < 8 + struct.unpack_from("<I", data, 4)[0]:
                self._keep(data)
                return batch
            self._set_metadata(*read_metadata(data))
            pos = 8 + struct.unpack_from("<I", data, 4)[0]
        buf = np.frombuffer(data, np.uint8)[pos:]
        if buf.ctypes.data % 8:  # the kernels read 8-byte words: align the start (v1/v2 metadata)
            aligned = np.empty(len(buf) + 8, np.uint8)
            shift = (-aligned.ctypes.data) % 8
            buf = aligned[shift : shift + len(buf)]
            buf[:] = np.frombuffer(data, np.uint8)[pos:]
            buf.flags.writeable = False  # read-only like the plain path: one kernel signature
        n, used = self._decode_records(buf, batch)
        batch.consumed = pos + used
        self._keep(data[pos + used :])
        return batch

    def finish(self) -> DecodedBatch:
        """Decode what is left at the end of the input: truncated trailing bytes count as one
        malformed record; truncated metadata raises `DbnError`."""
        batch = self.decode()
        if self.metadata is None and self._pending:
            read_metadata(self._take())
        if self._pending:
            batch.malformed += 1
            batch.truncated = self._pending
            batch.consumed += self._pending
            self._chunks, self._pending = [], 0
        self._resyncing = False
        return batch

    # -- internals -------------------------------------------------------------------------

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks, self._pending = [], 0
        return data

    def _keep(self, rest: bytes) -> None:
        if rest:
            self._chunks, self._pending = [rest], len(rest)

    def _set_metadata(self, meta: DbnMetadata, _offset: int) -> None:
        self.metadata = meta
        extra = 8 if meta.ts_out else 0
        col = min(meta.version, 3)
        for rt, (_name, *sizes) in RECORD_SIZES.items():
            self._sizes[rt] = sizes[col - 1] + extra
        v1 = meta.version == 1
        specs = {
            RType.SYMBOL_MAPPING: _MAPPING_V1 if v1 else _MAPPING_V2,
            RType.SYSTEM: _SYSTEM_V1 if v1 else _SYSTEM_V2,
            RType.ERROR: _ERROR_V1 if v1 else _ERROR_V2,
        }
        self._dtypes = {rt: _dtype(f, int(self._sizes[rt])) for rt, f in specs.items()}
        self._tbbo = meta.schema == SCHEMAS["tbbo"]

    def _view(self, buf: np.ndarray, offs: np.ndarray, rt: int) -> np.ndarray:
        """The records of one rtype at `offs` as a structured array (copied out of `buf`)."""
        dt = self._dtypes[rt]
        rows = buf[offs[:, None] + np.arange(dt.itemsize)]
        return rows.view(dt).reshape(len(offs))

    def _decode_records(self, buf: np.ndarray, batch: DecodedBatch) -> tuple[int, int]:
        cap = len(buf) // 16 + 1
        offsets = np.empty(cap, np.int64)
        rtypes = np.empty(cap, np.uint8)
        n, used, bad, self._resyncing = frame(buf, self._sizes, offsets, rtypes, self._resyncing)
        batch.malformed += int(bad)
        if n == 0:
            return 0, int(used)
        out = np.empty(2 * n, RECORD_DTYPE)
        out_words = out.view(np.uint64).reshape(-1, 8)
        out_floats = out.view(np.float64).reshape(-1, 8)
        other = np.empty(n, np.int64)
        stats = np.zeros(N_STATS, np.int64)
        now = time.time_ns() if self._now else 0
        book = self._book
        offsets = offsets[:n]
        if (offsets & 7).any():  # records shifted by a corrupt region: copy them to aligned places
            buf, offsets = _realign(buf, offsets)
        words = buf[: len(buf) // 8 * 8].view(np.uint64)
        done, nout, nother = 0, 0, 0
        while True:
            done, nout, nother = convert(buf, words, offsets, rtypes, done, n, now, self._tbbo, *book.tables,
                                         book.counts, stats, out_words, out_floats, nout, other, nother)
            if done >= n:
                break
            book.grow()
        batch.records = out[:nout]
        batch.malformed += int(stats[STAT_MALFORMED])
        if stats[STAT_NOT_TRADE]:
            batch.skipped["trades:not-T"] = int(stats[STAT_NOT_TRADE])
        for name, v in zip(MBO_ANOMALIES, stats.tolist(), strict=False):
            if v:
                batch.anomalies[name] = v
        if nother:
            self._others(buf, offsets[other[:nother]], rtypes[other[:nother]], batch)
        return n, int(used)

    def _others(self, buf: np.ndarray, offs: np.ndarray, rts: np.ndarray, batch: DecodedBatch) -> None:
        """Record types that produce no records: mappings, system, errors, skipped, unknown."""
        for rt in np.unique(rts).tolist():
            sel = offs[rts == rt]
            if rt == RType.SYMBOL_MAPPING:
                self._mappings(self._view(buf, sel, rt), batch)
            elif rt in (RType.SYSTEM, RType.ERROR):
                arr = self._view(buf, sel, rt)
                codes = arr["code"].tolist() if "code" in (arr.dtype.names or ()) else [None] * len(arr)
                out = batch.system if rt == RType.SYSTEM else batch.errors
                out.extend((c, _cstr(m)) for c, m in zip(codes, arr["msg"].tolist(), strict=True))
            elif rt in RECORD_SIZES:
                name = RECORD_SIZES[rt][0]
                batch.skipped[name] = batch.skipped.get(name, 0) + len(sel)
            else:
                batch.malformed += len(sel)

    def _mappings(self, arr: np.ndarray, batch: DecodedBatch) -> None:
        ids = arr["instrument_id"].tolist()
        ins = arr["in_sym"].tolist()
        outs = arr["out_sym"].tolist()
        for iid, i_sym, o_sym in zip(ids, ins, outs, strict=True):
            out = _cstr(o_sym)
            symbol = out if out and out != str(iid) else _cstr(i_sym)
            batch.mappings.append((iid, symbol))


def _realign(buf: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy the framed records back to back into a fresh (8-byte aligned) buffer."""
    lengths = buf[offsets].astype(np.int64) * 4
    starts = np.zeros(len(offsets), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    index = np.repeat(offsets - starts, lengths) + np.arange(int(lengths.sum()))
    return buf[index], starts


class InstrumentMap:
    """Vendor instrument id -> our registry id, applied to whole batches with numpy."""

    def __init__(self) -> None:
        self._map: dict[int, int] = {}
        self._keys = np.empty(0, np.uint32)
        self._vals = np.empty(0, np.uint32)
        self._dirty = False

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, vendor_id: int) -> bool:
        return vendor_id in self._map

    def add(self, vendor_id: int, our_id: int) -> None:
        """Map `vendor_id` to `our_id` (a later add for the same vendor id replaces it)."""
        if self._map.get(vendor_id) != our_id:
            self._map[int(vendor_id)] = int(our_id)
            self._dirty = True

    def apply(self, records: np.ndarray) -> np.ndarray:
        """Rewrite ``instrument_id`` in place; returns a bool mask of records whose vendor id
        is unknown (left unchanged)."""
        ours, unknown = self.lookup(records["instrument_id"])
        records["instrument_id"] = ours
        return unknown

    def map_in_place(self, ids: np.ndarray, start: int = 0) -> tuple[int, int]:
        """Rewrite the vendor `ids` (``records["instrument_id"]``) from `start` on to our ids, in
        place, up to the first vendor id not in the map. Returns (where it stopped: ``len(ids)``
        once every id was known; how many of the rewritten ids are 0). Nothing from where it
        stopped on is touched, so the caller can add the ids it lacks and go on from there."""
        self._sort()
        stop, zeros = remap(ids, self._keys, self._vals, start)
        return int(stop), int(zeros)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Our ids for the vendor `ids` (an unknown one left as it is) and a bool mask of the unknown."""
        self._sort()
        if not len(self._keys):
            return np.asarray(ids, np.uint32), np.ones(len(ids), np.bool_)
        pos = np.searchsorted(self._keys, ids)
        pos[pos == len(self._keys)] = 0
        found = self._keys[pos] == ids
        return np.where(found, self._vals[pos], ids), ~found

    def _sort(self) -> None:
        """The map as sorted key and value arrays, rebuilt after an `add`."""
        if self._dirty:
            keys = np.fromiter(self._map.keys(), np.uint32, len(self._map))
            order = np.argsort(keys)
            self._keys = keys[order]
            self._vals = np.fromiter(self._map.values(), np.uint32, len(self._map))[order]
            self._dirty = False
