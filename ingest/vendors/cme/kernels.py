"""Numba kernels of the MDP 3.0 decoder: frame whole packets into message and group-entry
tables, and gather wire blocks into fixed-size rows.

They live in one module because numba's on-disk cache is keyed on the defining file only.
Layouts arrive as arrays built from the schema (`streamctl.ingest.vendors.cme.decoder.Layout`),
so nothing here knows a template.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["frame", "gather", "PACKET_HEADER", "MESSAGE_HEADER",
           "BAD_SHORT", "BAD_SIZE", "BAD_SCHEMA", "BAD_BLOCK", "BAD_GROUP"]

PACKET_HEADER = 12
"""u32 MsgSeqNum, u64 SendingTime."""
MESSAGE_HEADER = 10
"""u16 MsgSize (counting itself), then the SBE header: blockLength, templateId, schemaId, version."""

# Why a packet was refused (``bad`` column of `frame`); 0 = decoded.
BAD_SHORT, BAD_SIZE, BAD_SCHEMA, BAD_BLOCK, BAD_GROUP = 1, 2, 3, 4, 5


@numba.njit(cache=True, nogil=True)
def _u16(buf, i):
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)


@numba.njit(cache=True, nogil=True)
def _walk(buf, start, end, schema_id, known, n_groups, hdr_size, cnt_off, cnt_width, g_since,
          fill, msg_out, ent_out, n_msg0, n_ent0):
    """Walk one packet; return (reason, messages, entries). With ``fill`` it writes the tables."""
    if end - start < 12:
        return 1, 0, 0
    off = start + 12
    n_msg, n_ent = 0, 0
    while off < end:
        if end - off < 10:
            return 2, 0, 0
        size = _u16(buf, off)
        if size < 10 or off + size > end:
            return 2, 0, 0
        msg_end = off + size
        bl = _u16(buf, off + 2)
        tid = _u16(buf, off + 4)
        sid = _u16(buf, off + 6)
        ver = _u16(buf, off + 8)
        if sid != schema_id:
            return 3, 0, 0
        root = off + 10
        if root + bl > msg_end:
            return 4, 0, 0
        if fill:
            m = n_msg0 + n_msg
            msg_out[m, 0] = root
            msg_out[m, 1] = tid
            msg_out[m, 2] = ver
            msg_out[m, 3] = bl
        pos = root + bl
        if tid < known.shape[0] and known[tid]:
            for g in range(n_groups[tid]):
                if g_since[tid, g] > ver:
                    continue
                hs = hdr_size[tid, g]
                if pos + hs > msg_end:
                    return 5, 0, 0
                gbl = _u16(buf, pos)
                cnt = np.int64(buf[pos + cnt_off[tid, g]])
                if cnt_width[tid, g] == 2:
                    cnt = _u16(buf, pos + cnt_off[tid, g])
                pos += hs
                if pos + gbl * cnt > msg_end:
                    return 5, 0, 0
                for _ in range(cnt):
                    if fill:
                        e = n_ent0 + n_ent
                        ent_out[e, 0] = n_msg0 + n_msg
                        ent_out[e, 1] = g
                        ent_out[e, 2] = pos
                        ent_out[e, 3] = gbl
                    n_ent += 1
                    pos += gbl
        n_msg += 1
        off = msg_end
    return 0, n_msg, n_ent


@numba.njit(cache=True, nogil=True)
def frame(buf, starts, ends, schema_id, known, n_groups, hdr_size, cnt_off, cnt_width, g_since):
    """Frame every packet ``buf[starts[i]:ends[i]]``.

    Returns ``bad`` (per packet: 0 or a BAD_* reason; a refused packet contributes nothing),
    ``msgs`` (rows: root offset, template, version, root blockLength; plus the packet index in
    ``msg_pkt``) and ``ents`` (rows: message index, group index, offset, group blockLength).
    """
    n = starts.shape[0]
    bad = np.zeros(n, np.uint8)
    dummy = np.zeros((0, 4), np.int64)
    total_msg, total_ent = 0, 0
    for i in range(n):
        r, nm, ne = _walk(buf, starts[i], ends[i], schema_id, known, n_groups, hdr_size, cnt_off, cnt_width,
                          g_since, False, dummy, dummy, 0, 0)
        bad[i] = r
        total_msg += nm
        total_ent += ne
    msgs = np.empty((total_msg, 4), np.int64)
    ents = np.empty((total_ent, 4), np.int64)
    msg_pkt = np.empty(total_msg, np.int64)
    m, e = 0, 0
    for i in range(n):
        if bad[i]:
            continue
        r, nm, ne = _walk(buf, starts[i], ends[i], schema_id, known, n_groups, hdr_size, cnt_off, cnt_width,
                          g_since, True, msgs, ents, m, e)
        msg_pkt[m:m + nm] = i
        m += nm
        e += ne
    return bad, msgs, msg_pkt, ents


@numba.njit(cache=True, nogil=True)
def gather(buf, offsets, lengths, null_row):
    """Rows of ``len(null_row)`` bytes: each the wire block at ``offsets[i]`` (its first
    ``lengths[i]`` bytes, at most a row), the rest the null row (fields newer than the sender)."""
    width = null_row.shape[0]
    out = np.empty((offsets.shape[0], width), np.uint8)
    for i in range(offsets.shape[0]):
        n = min(lengths[i], width)
        o = offsets[i]
        for j in range(n):
            out[i, j] = buf[o + j]
        for j in range(n, width):
            out[i, j] = null_row[j]
    return out
