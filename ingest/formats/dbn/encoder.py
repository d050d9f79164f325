"""DBN bytes a live gateway writes itself (our local venue needs them; decoding is `dbn`).

A Databento live session starts with a Metadata header, then interleaves the data records
with records the gateway makes up: `SymbolMappingMsg` (which instrument id a subscribed
symbol resolved to), `SystemMsg` (heartbeats, subscription acks) and `ErrorMsg` (a
subscription that could not be served). Each comes in the DBN version of the data it
accompanies (v1 has shorter symbols and no ``code``), so every encoder takes `version`.
Layouts follow the DBN specification (little-endian, 16-byte record header, lengths in
units of 4 bytes); the tests compare every encoder with ``databento_dbn``'s own bytes.
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "SCHEMAS",
    "STYPES",
    "RType",
    "SystemCode",
    "ErrorCode",
    "UNDEF_TIMESTAMP",
    "MIXED_SCHEMA",
    "NO_STYPE",
    "encode_metadata",
    "encode_symbol_mapping",
    "encode_system",
    "encode_error",
    "record_header",
]

SCHEMAS: dict[str, int] = {
    "mbo": 0,
    "mbp-1": 1,
    "mbp-10": 2,
    "tbbo": 3,
    "trades": 4,
    "ohlcv-1s": 5,
    "ohlcv-1m": 6,
    "ohlcv-1h": 7,
    "ohlcv-1d": 8,
    "definition": 9,
    "statistics": 10,
    "status": 11,
    "imbalance": 12,
    "ohlcv-eod": 13,
    "cmbp-1": 14,
    "cbbo-1s": 15,
    "cbbo-1m": 16,
    "tcbbo": 17,
    "bbo-1s": 18,
    "bbo-1m": 19,
}
"""Schema name -> the u16 in a Metadata header."""

STYPES: dict[str, int] = {
    "instrument_id": 0,
    "raw_symbol": 1,
    "smart": 2,
    "continuous": 3,
    "parent": 4,
    "nasdaq_symbol": 5,
    "cms_symbol": 6,
    "isin": 7,
    "us_code": 8,
    "bbg_comp_id": 9,
    "bbg_comp_ticker": 10,
    "figi": 11,
    "figi_ticker": 12,
}
"""Symbology type name -> u8."""

MIXED_SCHEMA = 0xFFFF
"""Metadata schema of a live session that may mix schemas."""
NO_STYPE = 0xFF
"""Metadata stype_in of a live session (subscriptions may use different ones)."""
UNDEF_TIMESTAMP = (1 << 64) - 1


class RType(enum.IntEnum):
    """Record types (byte 1 of every record header) this module and the venue need."""

    MBP_0 = 0x00
    MBP_1 = 0x01
    MBP_10 = 0x0A
    STATUS = 0x12
    INSTRUMENT_DEF = 0x13
    IMBALANCE = 0x14
    ERROR = 0x15
    SYMBOL_MAPPING = 0x16
    SYSTEM = 0x17
    STATISTICS = 0x18
    OHLCV_1S = 0x20
    OHLCV_1M = 0x21
    OHLCV_1H = 0x22
    OHLCV_1D = 0x23
    OHLCV_EOD = 0x24
    MBO = 0xA0


class SystemCode(enum.IntEnum):
    HEARTBEAT = 0
    SUBSCRIPTION_ACK = 1
    SLOW_READER_WARNING = 2
    REPLAY_COMPLETED = 3
    END_OF_INTERVAL = 4
    UNSET = 255


class ErrorCode(enum.IntEnum):
    AUTH_FAILED = 1
    API_KEY_DEACTIVATED = 2
    CONNECTION_LIMIT_EXCEEDED = 3
    SYMBOL_RESOLUTION_FAILED = 4
    INVALID_SUBSCRIPTION = 5
    INTERNAL_ERROR = 6
    SKIPPED_RECORDS_AFTER_SLOW_READING = 7
    UNSET = 255


_HEADER = struct.Struct("<BBHIQ")  # length/4, rtype, publisher_id, instrument_id, ts_event
_SYMBOL_LEN = {1: 22, 2: 71, 3: 71}
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
    if size % 4 or not 16 <= size <= 1020:
        raise ValueError(f"record `size` must be a multiple of 4 in 16..1020, was {size}")
    return _HEADER.pack(size // 4, rtype, publisher_id, instrument_id, ts_event)


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
        body += struct.pack("<BBBH", stype_in_id, stype_out_id, int(ts_out), _SYMBOL_LEN[version])
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
    n = _SYMBOL_LEN[version]
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
        16 + len(body), RType.SYMBOL_MAPPING, publisher_id=publisher_id, instrument_id=instrument_id, ts_event=ts_event
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
    return record_header(16 + len(body), RType.SYSTEM, ts_event=ts_event) + body


def encode_error(*, version: int, ts_event: int, err: str, code: int, is_last: bool = True) -> bytes:
    """An ErrorMsg (320 bytes; 80 in v1 with a 64-byte text and no code)."""
    _check_version(version)
    if version == 1:
        body = _cstr(err, 64, field="err", truncate=True)
    else:
        body = _cstr(err, 302, field="err", truncate=True) + bytes([code, int(is_last)])
    return record_header(16 + len(body), RType.ERROR, ts_event=ts_event) + body
