"""The numbers the DBN specification fixes (databento-dbn 0.70), defined once for the decoder,
the numba kernels, the encoder and the local venue.

Record types, flag bits, schema and symbology codes, record sizes per DBN version and the
offsets of the gateway records' text fields. Values never change once DBN publishes them;
new record types are only ever added.
"""

from __future__ import annotations

import enum

__all__ = [
    "SCHEMAS",
    "SCHEMA_NAMES",
    "STYPES",
    "RECORD_SIZES",
    "RType",
    "SystemCode",
    "ErrorCode",
    "F_LAST",
    "F_TOB",
    "F_SNAPSHOT",
    "F_BAD_TS_RECV",
    "FLAGS_KEPT",
    "UNDEF_TIMESTAMP",
    "MIXED_SCHEMA",
    "NO_STYPE",
    "ZSTD_MAGIC",
    "HEADER_SIZE",
    "SYMBOL_CSTR_LEN",
    "MAPPING_OUT_SYMBOL",
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
SCHEMA_NAMES: tuple[str, ...] = tuple(sorted(SCHEMAS, key=SCHEMAS.__getitem__))
"""Schema names by their u16 value (the inverse of `SCHEMAS`)."""

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
"""A u64 timestamp that is not set (also the open end of a Metadata ``end``)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""The first bytes of a ``.dbn.zst`` file."""


class RType(enum.IntEnum):
    """Record types: byte 1 of every record header."""

    MBP_0 = 0x00
    """trades"""
    MBP_1 = 0x01
    """mbp-1 and tbbo"""
    MBP_10 = 0x0A
    OHLCV_DEPRECATED = 0x11
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
    CMBP_1 = 0xB1
    CBBO_1S = 0xC0
    CBBO_1M = 0xC1
    TCBBO = 0xC2
    BBO_1S = 0xC3
    BBO_1M = 0xC4


RECORD_SIZES: dict[int, tuple[str, int, int, int]] = {
    RType.MBP_0: ("trades", 48, 48, 48),
    RType.MBP_1: ("mbp-1", 80, 80, 80),
    RType.MBP_10: ("mbp-10", 368, 368, 368),
    RType.OHLCV_DEPRECATED: ("ohlcv", 56, 56, 56),
    RType.STATUS: ("status", 40, 40, 40),
    RType.INSTRUMENT_DEF: ("definition", 360, 400, 520),
    RType.IMBALANCE: ("imbalance", 112, 112, 112),
    RType.ERROR: ("error", 80, 320, 320),
    RType.SYMBOL_MAPPING: ("symbol-mapping", 80, 176, 176),
    RType.SYSTEM: ("system", 80, 320, 320),
    RType.STATISTICS: ("statistics", 64, 64, 80),
    RType.OHLCV_1S: ("ohlcv", 56, 56, 56),
    RType.OHLCV_1M: ("ohlcv", 56, 56, 56),
    RType.OHLCV_1H: ("ohlcv", 56, 56, 56),
    RType.OHLCV_1D: ("ohlcv", 56, 56, 56),
    RType.OHLCV_EOD: ("ohlcv", 56, 56, 56),
    RType.MBO: ("mbo", 56, 56, 56),
    RType.CMBP_1: ("cmbp-1", 80, 80, 80),
    RType.CBBO_1S: ("cbbo", 80, 80, 80),
    RType.CBBO_1M: ("cbbo", 80, 80, 80),
    RType.TCBBO: ("tcbbo", 80, 80, 80),
    RType.BBO_1S: ("bbo", 80, 80, 80),
    RType.BBO_1M: ("bbo", 80, 80, 80),
}
"""Every DBN record type: rtype -> (name, byte size in v1, v2, v3), without ``ts_out``."""

HEADER_SIZE = 16
"""Bytes of the record header: length/4, rtype, publisher_id, instrument_id, ts_event."""
SYMBOL_CSTR_LEN = {1: 22, 2: 71, 3: 71}
"""Bytes of a symbol (NUL-padded) in SymbolMappingMsg and the Metadata, by DBN version."""
MAPPING_OUT_SYMBOL = {1: 38, 2: 89, 3: 89}
"""Byte offset of ``stype_out_symbol`` in a SymbolMappingMsg, by DBN version."""

F_LAST = 0x80
"""Last record of an event: the book is consistent after it."""
F_TOB = 0x40
"""Top-of-book message, not an individual order."""
F_SNAPSHOT = 0x20
"""Part of a book snapshot, not a live change."""
F_BAD_TS_RECV = 0x08
"""The receive timestamp is unreliable."""
FLAGS_KEPT = F_LAST | F_SNAPSHOT | F_BAD_TS_RECV
"""The flag bits a streamctl record keeps (the same bits as `streamctl.shm.records.Flag`)."""


class SystemCode(enum.IntEnum):
    """``code`` of a SystemMsg (DBN v2+)."""

    HEARTBEAT = 0
    SUBSCRIPTION_ACK = 1
    SLOW_READER_WARNING = 2
    REPLAY_COMPLETED = 3
    END_OF_INTERVAL = 4
    UNSET = 255


class ErrorCode(enum.IntEnum):
    """``code`` of an ErrorMsg (DBN v2+)."""

    AUTH_FAILED = 1
    API_KEY_DEACTIVATED = 2
    CONNECTION_LIMIT_EXCEEDED = 3
    SYMBOL_RESOLUTION_FAILED = 4
    INVALID_SUBSCRIPTION = 5
    INTERNAL_ERROR = 6
    SKIPPED_RECORDS_AFTER_SLOW_READING = 7
    UNSET = 255
