"""Compile (or load from numba's cache) every DBN kernel by decoding a tiny live-style stream.

The forkserver runs this before any feed forks, so no feed process compiles (a compile of
several seconds inside a feed would miss heartbeats and get it killed). Every kernel signature
the decoder can use is reached: the plain and the realigned (v1/v2 metadata) input paths, and
the MBO tables growing, and the replay's in-place remap of instrument ids.
"""

from __future__ import annotations

import struct

import numpy as np

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, InstrumentMap
from streamctl.ingest.formats.dbn.encoder import encode_metadata, encode_symbol_mapping, record_header
from streamctl.ingest.formats.dbn.mbo_book import MboBook

__all__ = ["warm_up"]

_ORDERS = 40
"""More resting orders than the smallest book holds, so its tables grow once."""


def _stream(version: int) -> bytes:
    """Trades, mbp-1 and MBO records (adds, a modify, a cancel, a clear) of one instrument."""
    ts = 1_700_000_000_000_000_000
    stream = encode_metadata(version=version, dataset="GLBX.MDP3", start=ts)
    stream += encode_symbol_mapping(version=version, instrument_id=7, ts_event=ts, stype_in_symbol="WARM",
                                    stype_out_symbol="WARM", start_ts=ts, end_ts=ts + 1)
    trade = struct.pack("<qIccBBQiI", 10**9, 1, b"T", b"B", 0x80, 0, ts, 0, 1)
    stream += record_header(48, 0x00, instrument_id=7, ts_event=ts) + trade
    stream += record_header(80, 0x01, instrument_id=7, ts_event=ts) + trade + struct.pack(
        "<qqIIII", 10**9, 2 * 10**9, 1, 1, 1, 1)
    events = [(b"A", order, order) for order in range(1, _ORDERS + 1)] + [(b"M", 1, 1), (b"C", 2, 2), (b"R", 0, 0)]
    for action, order, level in events:
        mbo = struct.pack("<QqIBBccQiI", order, level * 10**9, 1, 0x80, 0, action, b"B", ts, 0, 2)
        stream += record_header(56, 0xA0, instrument_id=7, ts_event=ts) + mbo
    return stream


def warm_up() -> np.ndarray:
    """Decode the stream in every DBN version; the records of the last one."""
    records: np.ndarray = np.empty(0)
    for version in (1, 2, 3):
        decoder = DbnDecoder(book=MboBook(capacity=16, level_capacity=16))
        decoder.write(_stream(version))
        records = decoder.decode().records
    ids = InstrumentMap()
    ids.add(7, 1)
    ids.map_in_place(records["instrument_id"])
    return records
