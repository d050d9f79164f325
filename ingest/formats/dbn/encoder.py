"""DBN bytes a live gateway writes itself (our local venue needs them; decoding is `decoder`).

A Databento live session starts with a Metadata header, then interleaves the data records
with records the gateway makes up: `SymbolMappingMsg` (which instrument id a subscribed
symbol resolved to), `SystemMsg` (heartbeats, subscription acks) and `ErrorMsg` (a
subscription that could not be served). Each comes in the DBN version of the data it
accompanies (v1 has shorter symbols and no ``code``), so every encoder takes `version`.
Layouts follow the DBN specification (little-endian, 16-byte record header, lengths in
units of 4 bytes); the tests compare every encoder with ``databento_dbn``'s own bytes.
"""

from __future__ import annotations

import struct

from streamctl.ingest.formats.dbn.constants import (
    HEADER_SIZE,
    MIXED_SCHEMA,
    NO_STYPE,
    SCHEMAS,
    STYPES,
    SYMBOL_CSTR_LEN,
    UNDEF_TIMESTAMP,
    RType,
    SystemCode,
)

__all__ = [
    "encode_metadata",
    "encode_symbol_mapping",
    "encode_system",
    "encode_error",
    "record_header",
]

_HEADER = struct.Struct("<BBHIQ")  # length/4, rtype, publisher_id, instrument_id, ts_event
_DATASET_LEN = 16
_FIXED_METADATA = 108  # bytes before schema_definition_length


def _check_version(version: int) -> None:
    if version not in (1, 2, 3):
        raise ValueError(f"`version` must be 1, 2 or 3, was {version}")


def _cstr(text: str, size: int, *, field: str, truncate: bool = False) -> bytes:
    raw = text.encode("ascii", "replace")
    if len(raw) >= size:
        if not truncate:
            raise ValueError(f"`{field}` must be shorter than {size} bytes, was {text!r}")
        raw = raw[: size - 1]
    return raw.ljust(size, b"\0")


def record_header(size: int, rtype: int, *, publisher_id: int = 0, instrument_id: int = 0, ts_event: int) -> bytes:
    """The 16-byte header of a `size`-byte record."""
    if size % 4 or not HEADER_SIZE <= size <= 1020:
        raise ValueError(f"record `size` must be a multiple of 4 in 16..1020, was {size}")
    return _HEADER.pack(size // 4, rtype, publisher_id, instrument_id, ts_event)


# Keyword-only, like every encoder here: the fields are many and several share a type.
def encode_metadata(
    *,
    version: int,
    dataset: str,
    start: int,
    schema: str | None = None,
    stype_in: str | None = None,
    stype_out: str = "instrument_id",
    ts_out: bool = False,
    end: int | None = None,
    limit: int = 0,
) -> bytes:
    """A live-session Metadata header: no symbols, partial, not_found or mappings.

    ``schema=None`` writes 0xFFFF (mixed) and ``stype_in=None`` writes 0xFF, as the live
    gateway does for a session that may combine several subscriptions.
    """
    _check_version(version)
    schema_id = MIXED_SCHEMA if schema is None else _lookup(SCHEMAS, schema, "schema")
    stype_in_id = NO_STYPE if stype_in is None else _lookup(STYPES, stype_in, "stype_in")
    stype_out_id = _lookup(STYPES, stype_out, "stype_out")
    body = bytearray()
    body += _cstr(dataset, _DATASET_LEN, field="dataset")
    body += struct.pack("<HQQQ", schema_id, start, UNDEF_TIMESTAMP if end is None else end, limit)
    if version == 1:
        body += struct.pack("<QBBB", UNDEF_TIMESTAMP, stype_in_id, stype_out_id, int(ts_out))
    else:
        body += struct.pack("<BBBH", stype_in_id, stype_out_id, int(ts_out), SYMBOL_CSTR_LEN[version])
    body += bytes(_FIXED_METADATA - 8 - len(body))
    body += struct.pack("<I", 0)  # schema_definition_length
    body += struct.pack("<IIII", 0, 0, 0, 0)  # symbols, partial, not_found, mappings: all empty
    if version >= 3:
        body += bytes(-(8 + len(body)) % 8)
    return b"DBN" + bytes([version]) + struct.pack("<I", len(body)) + bytes(body)


def _lookup(table: dict[str, int], name: str, field: str) -> int:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"`{field}` must be one of {', '.join(table)}; was {name!r}") from None


def encode_symbol_mapping(
    *,
    version: int,
    instrument_id: int,
    ts_event: int,
    stype_in_symbol: str,
    stype_out_symbol: str,
    start_ts: int,
    end_ts: int,
    stype_in: str = "raw_symbol",
    stype_out: str = "instrument_id",
    publisher_id: int = 0,
) -> bytes:
    """A SymbolMappingMsg (176 bytes; 80 in v1, which has 22-byte symbols and no stypes)."""
    _check_version(version)
    n = SYMBOL_CSTR_LEN[version]
    if version == 1:
        body = (
            _cstr(stype_in_symbol, n, field="stype_in_symbol")
            + _cstr(stype_out_symbol, n, field="stype_out_symbol")
            + bytes(4)
            + struct.pack("<QQ", start_ts, end_ts)
        )
    else:
        body = (
            bytes([_lookup(STYPES, stype_in, "stype_in")])
            + _cstr(stype_in_symbol, n, field="stype_in_symbol")
            + bytes([_lookup(STYPES, stype_out, "stype_out")])
            + _cstr(stype_out_symbol, n, field="stype_out_symbol")
            + struct.pack("<QQ", start_ts, end_ts)
        )
    header = record_header(
        HEADER_SIZE + len(body), RType.SYMBOL_MAPPING, publisher_id=publisher_id, instrument_id=instrument_id, ts_event=ts_event
    )
    return header + body


def encode_system(*, version: int, ts_event: int, msg: str, code: int = SystemCode.HEARTBEAT) -> bytes:
    """A SystemMsg (320 bytes; 80 in v1 with a 64-byte text and no code).

    v1 readers recognise a heartbeat by the text ``Heartbeat``; `msg` is truncated to fit.
    """
    _check_version(version)
    if version == 1:
        body = _cstr(msg, 64, field="msg", truncate=True)
    else:
        body = _cstr(msg, 303, field="msg", truncate=True) + bytes([code])
    return record_header(HEADER_SIZE + len(body), RType.SYSTEM, ts_event=ts_event) + body


def encode_error(*, version: int, ts_event: int, err: str, code: int, is_last: bool = True) -> bytes:
    """An ErrorMsg (320 bytes; 80 in v1 with a 64-byte text and no code)."""
    _check_version(version)
    if version == 1:
        body = _cstr(err, 64, field="err", truncate=True)
    else:
        body = _cstr(err, 302, field="err", truncate=True) + bytes([code, int(is_last)])
    return record_header(HEADER_SIZE + len(body), RType.ERROR, ts_event=ts_event) + body
