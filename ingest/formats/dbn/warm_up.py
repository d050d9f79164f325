"""Compile (or load from numba's cache) every DBN kernel by decoding a tiny live-style stream."""

from __future__ import annotations

import struct

import numpy as np

from streamctl.ingest.formats.dbn.constants import RType
from streamctl.ingest.formats.dbn.decoder import DbnDecoder
from streamctl.ingest.formats.dbn.encoder import encode_metadata, encode_symbol_mapping, record_header

__all__ = ["warm_up"]


def warm_up() -> np.ndarray:
    """Decode trades, mbp-1 and MBO records (add, modify, cancel, clear) once."""
    ts = 1_700_000_000_000_000_000
    stream = encode_metadata(version=3, dataset="GLBX.MDP3", start=ts)
    stream += encode_symbol_mapping(version=3, instrument_id=7, ts_event=ts, stype_in_symbol="WARM",
                                    stype_out_symbol="WARM", start_ts=ts, end_ts=ts + 1)
    trade = struct.pack("<qIccBBQiI", 10**9, 1, b"T", b"B", 0x80, 0, ts, 0, 1)
    stream += record_header(48, RType.MBP_0, instrument_id=7, ts_event=ts) + trade
    stream += record_header(80, RType.MBP_1, instrument_id=7, ts_event=ts) + trade + struct.pack(
        "<qqIIII", 10**9, 2 * 10**9, 1, 1, 1, 1)
    for action, order in ((b"A", 1), (b"M", 1), (b"C", 1), (b"R", 0)):
        mbo = struct.pack("<QqIBBccQiI", order, 10**9, 1, 0x80, 0, action, b"B", ts, 0, 2)
        stream += record_header(56, RType.MBO, instrument_id=7, ts_event=ts) + mbo
    decoder = DbnDecoder()
    decoder.write(stream)
    return decoder.decode().records
