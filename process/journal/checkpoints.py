"""Checkpoint files: a worker's state at a journal entry boundary, so a restart replays only the tail.

``<run>.<day>.<offset>.ckpt`` beside the journal, ``day`` and ``offset`` naming the journal
file (its event-time day) and the byte where the entries after the checkpoint begin, so names
sort by journal position. A file is a 32-byte header (magic ``STCCKPT\\0``, u32 format version,
u32 CRC-32 of the body, u64 body length, 8 zero bytes) and a MessagePack body: maps, lists,
numbers, strings, and numpy arrays as an extension (type 1: MessagePack ``[dtype, shape,
bytes]``). No pickle: loading runs no code, and a state whose arrays do not fit the running code's
layouts is refused by the code that loads it. A file is written whole to a temporary name,
``fdatasync``ed and renamed, so a reader sees a whole checkpoint or none; one that is cut,
corrupt, of another format version or of another config (its `fingerprint`) is skipped with a
warning and the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "write_checkpoint", "read_checkpoint", "checkpoints",
           "newest_checkpoint", "prune"]

log = logging.getLogger("streamctl.journal")

MAGIC = b"STCCKPT\x00"
FORMAT = 1
"""Bumped whenever what a checkpoint holds, or how, changes: an older file is then refused."""
_HEADER = struct.Struct("<8sIIQ8x")
_ARRAY = 1
_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.ckpt$")


class CheckpointError(ValueError):
    """A file that is not a whole checkpoint of this format."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    run: int
    day: int
    """The journal file's day (days since 1970-01-01 UTC) the replay resumes in."""
    offset: int
    """The byte of that file where the entries after the checkpoint begin."""


def _encode_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        return msgspec.msgpack.Ext(_ARRAY, msgspec.msgpack.encode([array.dtype.str, list(array.shape),
                                                                   array.data]))
    raise TypeError(f"a checkpoint holds no {type(obj).__name__}")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _ARRAY:
        raise CheckpointError(f"unknown extension type {code}")
    dtype, shape, raw = msgspec.msgpack.decode(data)
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


_encoder = msgspec.msgpack.Encoder(enc_hook=_encode_hook)
_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def write_checkpoint(directory: Path, *, run: int, day: int, offset: int, state: dict) -> Path:
    """Write `state` as the checkpoint of `run` at journal position (`day`, `offset`), atomically."""
    body = _encoder.encode(state)
    path = directory / f"{run}.{day}.{offset}.ckpt"
    temporary = directory / f".{path.name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, _HEADER.pack(MAGIC, FORMAT, zlib.crc32(body), len(body)))
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # the rename itself survives a lost machine
    finally:
        os.close(directory_fd)
    return path


def read_checkpoint(path: Path) -> dict:
    """The state in `path`; `CheckpointError` if it is not a whole checkpoint of this format."""
    raw = path.read_bytes()
    if len(raw) < _HEADER.size:
        raise CheckpointError(f"`{path}` is shorter than a checkpoint header ({len(raw)} bytes)")
    magic, version, crc, length = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CheckpointError(f"`{path}` is not a streamctl checkpoint (magic {magic!r})")
    if version != FORMAT:
        raise CheckpointError(f"`{path}` is checkpoint format {version}; this streamctl reads {FORMAT}")
    body = memoryview(raw)[_HEADER.size:]
    if len(body) != length:
        raise CheckpointError(f"`{path}` holds {len(body)} bytes of a {length}-byte checkpoint")
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"`{path}` fails its CRC-32 (corrupt)")
    try:
        state = _decoder.decode(body)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"`{path}` does not decode: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"`{path}` holds a {type(state).__name__}, not a state map")
    return state


def checkpoints(directory: Path, run: int) -> list[Checkpoint]:
    """The checkpoints of `run` in `directory`, oldest journal position first."""
    found = []
    for path in directory.glob("*.ckpt"):
        match = _NAME.match(path.name)
        if match is not None and int(match.group(1)) == run:
            found.append(Checkpoint(path, run, int(match.group(2)), int(match.group(3))))
    return sorted(found, key=lambda c: (c.day, c.offset))


def newest_checkpoint(directory: Path, run: int, *, fingerprint: str,
                      skip: Collection[Path] = ()) -> tuple[Checkpoint, dict] | None:
    """The newest checkpoint of `run` (not in `skip`) that reads whole and was written for
    `fingerprint` (the worker's config), with its state; each one skipped is logged. None: there
    is none (replay the whole journal)."""
    for checkpoint in reversed(checkpoints(directory, run)):
        if checkpoint.path in skip:
            continue
        try:
            state = read_checkpoint(checkpoint.path)
        except (OSError, CheckpointError) as exc:
            log.warning("skipping checkpoint: %s", exc)
            continue
        if state.get("fingerprint") != fingerprint:
            log.warning("skipping checkpoint `%s`: written for another config or streamctl version",
                        checkpoint.path)
            continue
        return checkpoint, state
    return None


def prune(directory: Path, run: int, *, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints of `run`, its unfinished temporary files and
    every other run's checkpoints (only a run's own can restore it). Returns what was deleted."""
    mine = checkpoints(directory, run)
    gone = [c.path for c in mine[:max(len(mine) - keep, 0)]]
    for path in directory.glob("*.ckpt"):
        match = _NAME.match(path.name)
        if match is not None and int(match.group(1)) != run:
            gone.append(path)
    gone += [path for path in directory.glob(f".{run}.*.ckpt.tmp")]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
