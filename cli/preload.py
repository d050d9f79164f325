"""Imported once by the supervisor's forkserver, before any child is forked from it.

Everything a plant child needs is imported here, and every numba kernel (calculators, DBN
decoding, MBO book) is compiled or loaded from numba's on-disk cache here, so a forked child
inherits ready machine code: a restarted worker or feed is serving again in a fraction of a
second instead of paying the kernel load (or a first compile of ~10 s) itself.
"""

from __future__ import annotations

import logging
import struct
import time

import streamctl.ingest.feed  # noqa: F401  (imported for the children)
import streamctl.process.hub  # noqa: F401
import streamctl.process.publisher  # noqa: F401
import streamctl.process.worker  # noqa: F401
import streamctl.shm.registry  # noqa: F401
import streamctl.shm.ring  # noqa: F401

__all__ = ["warm_up_dbn", "SECONDS"]

log = logging.getLogger("streamctl.preload")


def warm_up_dbn():
    """Decode a tiny live-style DBN stream with trades, mbp-1 and MBO records."""
    from streamctl.ingest.dbn import DbnDecoder
    from streamctl.ingest.dbn_encode import encode_metadata, encode_symbol_mapping, record_header

    ts = 1_700_000_000_000_000_000
    stream = encode_metadata(version=3, dataset="GLBX.MDP3", start=ts)
    stream += encode_symbol_mapping(version=3, instrument_id=7, ts_event=ts, stype_in_symbol="WARM",
                                    stype_out_symbol="WARM", start_ts=ts, end_ts=ts + 1)
    trade = struct.pack("<qIccBBQiI", 10**9, 1, b"T", b"B", 0x80, 0, ts, 0, 1)
    stream += record_header(48, 0x00, instrument_id=7, ts_event=ts) + trade
    stream += record_header(80, 0x01, instrument_id=7, ts_event=ts) + trade + struct.pack(
        "<qqIIII", 10**9, 2 * 10**9, 1, 1, 1, 1)
    for action, order in ((b"A", 1), (b"M", 1), (b"C", 1), (b"R", 0)):
        mbo = struct.pack("<QqIBBccQiI", order, 10**9, 1, 0x80, 0, action, b"B", ts, 0, 2)
        stream += record_header(56, 0xA0, instrument_id=7, ts_event=ts) + mbo
    decoder = DbnDecoder()
    decoder.write(stream)
    return decoder.decode()


def _warm_all() -> float:
    start = time.perf_counter()
    from streamctl.process.calc.engine import warm_up

    warm_up()
    warm_up_dbn()
    return time.perf_counter() - start


SECONDS = _warm_all()
"""How long compiling or loading every kernel took in this process."""
