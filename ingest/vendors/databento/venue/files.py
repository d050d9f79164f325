"""The venue's data: recorded DBN files cut into raw record frames, merged per dataset.

A frame keeps the file's own record bytes, so the gateway serves exactly what was recorded;
symbols come from the Metadata mappings and from SymbolMappingMsgs of recorded live sessions.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from streamctl.ingest.formats.dbn.constants import (
    HEADER_SIZE,
    MAPPING_OUT_SYMBOL,
    RECORD_SIZES,
    SYMBOL_CSTR_LEN,
    RType,
)

__all__ = ["Frame", "VenueFile", "DatasetData", "load_venue_file", "load_datasets"]

_RTYPE_SCHEMA: dict[int, str] = {
    RType.MBP_0: "trades",
    RType.MBP_1: "mbp-1",
    RType.MBP_10: "mbp-10",
    RType.MBO: "mbo",
    RType.INSTRUMENT_DEF: "definition",
    RType.STATISTICS: "statistics",
    RType.STATUS: "status",
    RType.IMBALANCE: "imbalance",
    RType.OHLCV_1S: "ohlcv-1s",
    RType.OHLCV_1M: "ohlcv-1m",
    RType.OHLCV_1H: "ohlcv-1h",
    RType.OHLCV_1D: "ohlcv-1d",
    RType.OHLCV_EOD: "ohlcv-eod",
}
"""Schema of a record in a file whose Metadata says 'mixed' (a recorded live session)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One served record: what subscriptions match on, and its bytes as recorded."""

    ts_event: int
    instrument_id: int
    schema: str
    data: bytes


@dataclass
class VenueFile:
    """One served file: its records as raw DBN frames plus what resolves symbols."""

    path: str
    version: int
    dataset: str
    frames: list[Frame]
    symbols: dict[str, set[int]] = field(default_factory=dict)
    """Raw symbol -> instrument ids (from the Metadata mappings and SymbolMappingMsgs)."""
    skipped: int = 0
    """Records of a kind the venue does not serve (gateway records, unknown rtypes)."""


def load_venue_file(path: str) -> VenueFile:
    """Read a ``.dbn``/``.dbn.zst`` file for serving; a bad file raises `ValueError` naming it."""
    from streamctl.ingest.formats.dbn import decoder as dbn  # numba: not on `streamctl venue --help`

    data = dbn.read_file(path)
    meta, offset = dbn.read_metadata(data)
    if meta.ts_out:
        raise ValueError(f"`{path}`: files recorded with ts_out=1 are not served")
    symbols: dict[str, set[int]] = {}
    for instrument_id, raw_symbol in dbn.metadata_symbols(meta).items():
        symbols.setdefault(raw_symbol, set()).add(instrument_id)
    frames: list[Frame] = []
    skipped = 0
    schema = meta.schema_name  # None for a mixed (live) file
    view = memoryview(data)
    end = len(data)
    while offset < end:
        length = data[offset] * 4
        rtype = data[offset + 1]
        known = RECORD_SIZES.get(rtype)
        if length < HEADER_SIZE or offset + length > end or (known is not None and known[meta.version] != length):
            raise ValueError(f"`{path}`: truncated or corrupt record at byte {offset} (length {length})")
        instrument_id = int.from_bytes(view[offset + 4 : offset + 8], "little")
        ts_event = int.from_bytes(view[offset + 8 : offset + 16], "little")
        if rtype == RType.SYMBOL_MAPPING:
            symbols.setdefault(_mapped_symbol(view[offset : offset + length], meta.version), set()).add(
                instrument_id
            )
            skipped += 1
        elif schema is not None and rtype not in (RType.SYSTEM, RType.ERROR):
            frames.append(Frame(ts_event, instrument_id, schema, bytes(view[offset : offset + length])))
        elif rtype in _RTYPE_SCHEMA:
            frames.append(Frame(ts_event, instrument_id, _RTYPE_SCHEMA[rtype], bytes(view[offset : offset + length])))
        else:
            skipped += 1
        offset += length
    return VenueFile(path, meta.version, meta.dataset, frames, symbols, skipped)


def _mapped_symbol(record: memoryview, version: int) -> str:
    """The resolved (``stype_out``) symbol of a SymbolMappingMsg."""
    start = MAPPING_OUT_SYMBOL[version]
    raw = bytes(record[start : start + SYMBOL_CSTR_LEN[version]])
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class DatasetData:
    """Everything the venue serves for one dataset: frames of all files merged by time."""

    def __init__(self, dataset: str, files: list[VenueFile]):
        versions = {f.version for f in files}
        if len(versions) > 1:
            detail = ", ".join(f"{f.path} (v{f.version})" for f in files)
            raise ValueError(f"files of dataset `{dataset}` must share one DBN version; got {detail}")
        self.dataset = dataset
        self.version = versions.pop()
        # Each file keeps its own order; files interleave by ts_event like a live feed.
        self.frames: list[Frame] = list(heapq.merge(*(f.frames for f in files), key=lambda fr: fr.ts_event))
        self.symbols: dict[str, set[int]] = {}
        for f in files:
            for raw_symbol, ids in f.symbols.items():
                self.symbols.setdefault(raw_symbol, set()).update(ids)
        self.names: dict[int, str] = {i: s for s, ids in sorted(self.symbols.items()) for i in ids}
        self.instruments = sorted({fr.instrument_id for fr in self.frames} | set(self.names))


def load_datasets(paths: list[str]) -> dict[str, DatasetData]:
    """The files of `paths` grouped by their dataset (files of one dataset share a DBN version)."""
    by_dataset: dict[str, list[VenueFile]] = {}
    for path in paths:
        vf = load_venue_file(path)
        by_dataset.setdefault(vf.dataset, []).append(vf)
    return {name: DatasetData(name, group) for name, group in by_dataset.items()}
