"""Compile (or load from numba's cache) the MDP 3.0 decoding and channel kernels in the forkserver, before feeds fork."""

from __future__ import annotations

from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.ingest.vendors.cme.synthetic import generate

__all__ = ["warm_up"]


def warm_up() -> None:
    schema = load_schema()
    dec = Decoder(schema).decode([d.payload for d in generate(schema, packets=8).datagrams])
    for tid in set(dec.msg_tid.tolist()):
        dec.root(tid)
    for mbo in (False, True):
        Channel(schema, lambda sid: sid, mbo=mbo).apply(dec)
