"""Decode whole batches of MDP 3.0 packets at once: one numba pass frames every packet, then
each template's root blocks and each group's entries are gathered into the schema's numpy
dtypes, so no Python code runs per field (or per message).

``blockLength`` is honoured both ways: a sender newer than the schema has longer blocks (the
extra bytes are skipped), an older one shorter blocks (the missing fields read as null). A
group or field whose ``sinceVersion`` is above the message's version is not on the wire. A
packet that does not frame (truncated, wrong schema id, a block or group past its end) is
refused whole, with its reason, and contributes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamctl.ingest.vendors.cme import kernels
from streamctl.ingest.vendors.cme.schema import DIMENSIONS, Block, Schema

__all__ = ["Decoder", "Decoded", "BAD_REASONS"]

BAD_REASONS = {
    kernels.BAD_SHORT: "shorter than the 12-byte packet header",
    kernels.BAD_SIZE: "a MsgSize past the packet's end (truncated) or below the header",
    kernels.BAD_SCHEMA: "a message of another schema id",
    kernels.BAD_BLOCK: "a root blockLength past its message's end",
    kernels.BAD_GROUP: "a group header or its entries past their message's end",
}

_HEADER = np.dtype([("MsgSeqNum", "<u4"), ("SendingTime", "<u8")])


class Layout:
    """The schema as the kernels read it: per template id, its groups' header shapes."""

    def __init__(self, schema: Schema):
        size = max(schema.templates) + 1
        width = max((len(t.groups) for t in schema.templates.values()), default=0) or 1
        self.known = np.zeros(size, np.bool_)
        self.n_groups = np.zeros(size, np.int64)
        self.hdr_size = np.zeros((size, width), np.int64)
        self.cnt_off = np.zeros((size, width), np.int64)
        self.cnt_width = np.zeros((size, width), np.int64)
        self.g_since = np.zeros((size, width), np.int64)
        for tid, t in schema.templates.items():
            self.known[tid] = True
            self.n_groups[tid] = len(t.groups)
            for g, group in enumerate(t.groups):
                self.hdr_size[tid, g], self.cnt_off[tid, g], self.cnt_width[tid, g] = DIMENSIONS[group.dimension]
                self.g_since[tid, g] = group.since_version


@dataclass
class Decoded:
    """One decoded batch. Packet columns are per input packet; message and entry columns only
    cover the packets that framed (``bad == 0``)."""

    schema: Schema
    buf: np.ndarray
    bad: np.ndarray
    """Per packet: 0, or the refusal reason (a key of `BAD_REASONS`)."""
    seq: np.ndarray
    sending_time: np.ndarray
    msg_pkt: np.ndarray
    msg_tid: np.ndarray
    msg_ver: np.ndarray
    _msgs: np.ndarray
    _ents: np.ndarray
    _cache: dict = field(default_factory=dict)

    def root(self, template_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(message indices, root blocks in the schema's dtype) of every `template_id` message."""
        key = ("root", template_id)
        if key not in self._cache:
            idx = np.flatnonzero(self.msg_tid == template_id)
            block = self.schema.template(template_id).root
            self._cache[key] = (idx, self._rows(block, self._msgs[idx, 0], self._msgs[idx, 3], self.msg_ver[idx]))
        return self._cache[key]

    def group(self, template_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(message index per entry, entries in the schema's dtype) of group `name` of `template_id`."""
        key = ("group", template_id, name)
        if key not in self._cache:
            template = self.schema.template(template_id)
            g = next(i for i, grp in enumerate(template.groups) if grp.name == name)
            ents = self._ents[(self.msg_tid[self._ents[:, 0]] == template_id) & (self._ents[:, 1] == g)]
            msg = ents[:, 0]
            self._cache[key] = (msg, self._rows(template.groups[g], ents[:, 2], ents[:, 3], self.msg_ver[msg]))
        return self._cache[key]

    def framing(self) -> tuple[np.ndarray, np.ndarray]:
        """The framing tables, for kernels that read fields themselves: messages (rows: root
        offset, template, version, root blockLength) and entries (rows: message, group index,
        offset, group blockLength), both in wire order."""
        return self._msgs, self._ents

    def _rows(self, block: Block, offsets: np.ndarray, lengths: np.ndarray, versions: np.ndarray) -> np.ndarray:
        if not block.block_length:
            return np.zeros(len(offsets), block.dtype)
        null = np.frombuffer(block.null_row, np.uint8)
        rows = kernels.gather(self.buf, offsets, lengths, null).reshape(-1).view(block.dtype)
        for f in block.fields:
            if f.since_version:
                older = versions < f.since_version
                if older.any():
                    rows[f.name][older] = np.frombuffer(block.null_row, block.dtype)[f.name][0]
        return rows


class Decoder:
    """Decodes batches of packets (UDP payloads) against one schema; build once, reuse."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.layout = Layout(schema)

    def decode(self, packets: Sequence[bytes]) -> Decoded:
        lengths = np.fromiter((len(p) for p in packets), np.int64, len(packets))
        ends = np.cumsum(lengths)
        return self.decode_buffer(np.frombuffer(b"".join(packets), np.uint8), ends - lengths, ends)

    def decode_buffer(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Decoded:
        lay = self.layout
        bad, msgs, msg_pkt, ents = kernels.frame(buf, starts, ends, self.schema.id, lay.known, lay.n_groups,
                                                 lay.hdr_size, lay.cnt_off, lay.cnt_width, lay.g_since)
        header = np.zeros(len(starts), _HEADER)
        ok = bad != kernels.BAD_SHORT
        if ok.any():
            full = np.frombuffer(np.zeros(_HEADER.itemsize, np.uint8).tobytes(), np.uint8)
            rows = kernels.gather(buf, starts[ok], np.full(int(ok.sum()), 12, np.int64), full)
            header[ok] = rows.reshape(-1).view(_HEADER)
        return Decoded(self.schema, buf, bad, header["MsgSeqNum"], header["SendingTime"], msg_pkt,
                       msgs[:, 1].astype(np.int64), msgs[:, 2].astype(np.int64), msgs, ents)
