"""Encode MDP 3.0 messages and packets from the schema (the venue's snapshot and definition
loops, and synthetic captures). It writes the same numpy dtypes the decoder reads."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from streamctl.ingest.vendors.cme.schema import DIMENSIONS, Block, Schema

__all__ = ["encode_message", "encode_packet"]


def _block(block: Block, values: Mapping[str, Any]) -> bytes:
    if not block.block_length and not values:
        return b""  # e.g. AdminHeartbeat12
    row = np.frombuffer(block.null_row, block.dtype).copy()
    for name, value in values.items():
        if name not in block.dtype.names:  # type: ignore[operator]
            raise KeyError(f"`{name}` is not a wire field of this block: {block.dtype.names}")
        row[name] = value
    return row.tobytes()


def encode_message(schema: Schema, template_id: int, root: Mapping[str, Any],
                   groups: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, *,
                   version: int | None = None) -> bytes:
    """One message with its MsgSize prefix; fields not given are null, groups not given are empty.
    Groups newer than `version` (default: the schema's) are left out, as a sender of that version would."""
    template = schema.template(template_id)
    version = schema.version if version is None else version
    body = [_block(template.root, root)]
    groups = groups or {}
    for group in template.groups:
        if group.since_version > version:
            continue
        entries = groups.get(group.name, ())
        size, cnt_off, cnt_width = DIMENSIONS[group.dimension]
        dimension = bytearray(size)
        struct.pack_into("<H", dimension, 0, group.block_length)
        struct.pack_into("<B" if cnt_width == 1 else "<H", dimension, cnt_off, len(entries))
        body.append(bytes(dimension))
        body.extend(_block(group, entry) for entry in entries)
    payload = b"".join(body)
    header = struct.pack("<HHHHH", 10 + len(payload), template.root.block_length, template_id, schema.id, version)
    return header + payload


def encode_packet(seq: int, sending_time: int, messages: Iterable[bytes]) -> bytes:
    """A UDP payload: MsgSeqNum, SendingTime, then the messages."""
    return struct.pack("<IQ", seq, sending_time) + b"".join(messages)
