"""The journal's file format: naming, headers, reading, cutting a torn tail, retention.

One file per (event-time day, plant run) in a partition's directory, named
``<YYYYMMDD>.<run>.jnl``: a 64-byte file header, then entries. Each entry is a 64-byte header
and a payload that is a whole number of 64-byte lines, so the records of a batch sit in the
file exactly as they sat in the ring. `docs/journal.md` gives every field.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamctl.shm.records import RECORD_DTYPE, RECORD_SIZE

__all__ = ["MAGIC", "VERSION", "RECORDS", "CLOCK", "FLUSH", "SYMBOL", "FileHeader", "Entry", "JournalError",
           "file_name", "run_files", "read_entries", "resumes_at", "day_of", "expire", "entry_header", "pad"]

log = logging.getLogger("streamctl.journal")

MAGIC = b"STCJRNL\x00"
VERSION = 1
LINE = 64
"""Headers and payloads are whole multiples of this many bytes."""
_FILE = struct.Struct("<8sHHHHiIqq24x")
_ENTRY = struct.Struct("<IBBHIIqqq24x")
assert _FILE.size == LINE and _ENTRY.size == LINE and RECORD_SIZE == LINE
ENTRY_MAGIC = 0x544E454A  # b"JENT"
RECORDS, CLOCK, FLUSH, SYMBOL = 1, 2, 3, 4
"""Entry kinds: a batch of one ring's records; the clocks by which bars were closed (one int64
per local symbol); the flush of open bars at a clean stop; a ring's instrument id and the symbol
the worker learned for it (before the first batch that needs it), so a journal replays alone."""
_DAY_NS = 86_400 * 1_000_000_000
_NAME = re.compile(r"^(\d{8})\.(\d+)\.jnl$")


class JournalError(ValueError):
    """A file that is not a journal of this partition and version."""


@dataclass(frozen=True)
class FileHeader:
    partition: int
    day: int
    """Days since 1970-01-01 (UTC) of the event times the file holds."""
    run: int
    created_ns: int

    def pack(self) -> bytes:
        return _FILE.pack(MAGIC, VERSION, self.partition, RECORD_SIZE, LINE, self.day, 0, self.run, self.created_ns)

    @classmethod
    def unpack(cls, raw: bytes, path: Path) -> FileHeader:
        if len(raw) < LINE:
            raise JournalError(f"`{path}` is shorter than a journal header ({len(raw)} bytes)")
        magic, version, partition, record_size, line, day, _, run, created = _FILE.unpack_from(raw)
        if magic != MAGIC:
            raise JournalError(f"`{path}` is not a streamctl journal (magic {magic!r})")
        if version != VERSION or record_size != RECORD_SIZE or line != LINE:
            raise JournalError(f"`{path}` is journal version {version} (record {record_size} bytes); "
                               f"this streamctl reads version {VERSION} ({RECORD_SIZE} bytes)")
        return cls(partition, day, run, created)


@dataclass(frozen=True)
class Entry:
    kind: int
    ring: int
    position: int
    """RECORDS: the ring's read position of the batch's first record."""
    messages_before: int
    """The worker's count of messages handed to ZeroMQ before this entry was processed."""
    written_ns: int
    payload: np.ndarray
    """RECORDS: the records (RECORD_DTYPE); CLOCK: int64 per local symbol; SYMBOL: the symbol's
    ASCII bytes, NUL-padded to 64; FLUSH: empty."""
    count: int = 0
    """The header's count field: records, clocks, or (SYMBOL) the instrument id."""

    @property
    def symbol(self) -> str:
        """SYMBOL entries: the symbol."""
        return bytes(self.payload).rstrip(b"\x00").decode("ascii")


def pad(n_bytes: int) -> int:
    """`n_bytes` rounded up to whole lines."""
    return -(-n_bytes // LINE) * LINE


def entry_header(kind: int, ring: int, count: int, payload_bytes: int, position: int, messages_before: int,
                 written_ns: int) -> bytes:
    return _ENTRY.pack(ENTRY_MAGIC, kind, ring, 0, count, payload_bytes, position, messages_before, written_ns)


def file_name(day: int, run: int) -> str:
    date = np.datetime64(day, "D").astype(str).replace("-", "")
    return f"{date}.{run}.jnl"


def day_of(ts_ns: int) -> int:
    return ts_ns // _DAY_NS


def _parse_name(path: Path) -> tuple[int, int] | None:
    """``(day, run)`` of a journal file name, or None."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    date = match.group(1)
    day = int(np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:]}", "D").astype(np.int64))
    return day, int(match.group(2))


def run_files(directory: Path, run: int) -> list[Path]:
    """The journal files of one plant run, oldest day first."""
    found = []
    for path in directory.glob("*.jnl"):
        parsed = _parse_name(path)
        if parsed is not None and parsed[1] == run:
            found.append((parsed[0], path))
    return [path for _, path in sorted(found)]


def read_entries(path: Path, *, partition: int, repair: bool, start: int = LINE) -> Iterator[Entry]:
    """Every whole entry of `path` from byte `start` (an entry boundary: the first entry, or a
    checkpoint's position, see `resumes_at`), in order.

    A cut tail (a worker killed inside a write: a short header or payload, or a header that is
    not an entry's) ends the file there; with `repair` the file is truncated at the end of its
    last whole entry, so appending goes on from a clean end. Payloads are copies.
    """
    with open(path, "r+b" if repair else "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < LINE:
            raise JournalError(f"`{path}` is shorter than a journal header ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            header = FileHeader.unpack(mm[:LINE], path)
            if header.partition != partition:
                raise JournalError(f"`{path}` is partition {header.partition}'s journal, not {partition}'s")
            if not LINE <= start <= size or start % LINE:
                raise JournalError(f"`{path}` has no entry boundary at byte {start} (size {size})")
            offset = start
            while offset < size:
                entry = _entry_at(mm, offset, size)
                if entry is None:
                    break
                yield entry[0]
                offset = entry[1]
        if offset < size:
            log.warning("journal `%s`: cut tail after byte %d (%d bytes of an unfinished entry)%s", path, offset,
                        size - offset, "; truncated" if repair else "")
            if repair:
                f.truncate(offset)


def resumes_at(path: Path, offset: int) -> bool:
    """Whether entries of `path` can resume at byte `offset` (a checkpoint's position): a whole
    entry's header starts there, or only the file's end follows (nothing, part of an unfinished
    entry, or zeros). A position inside a payload is refused rather than cut there."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not LINE <= offset <= size or offset % LINE:
            return False
        f.seek(offset)
        head = f.read(LINE)
    if len(head) < LINE or not any(head):
        return True
    magic, kind, _, _, _, payload_bytes, _, _, _ = _ENTRY.unpack(head)
    return magic == ENTRY_MAGIC and kind in (RECORDS, CLOCK, FLUSH, SYMBOL) and payload_bytes % LINE == 0


def _entry_at(mm: mmap.mmap, offset: int, size: int) -> tuple[Entry, int] | None:
    """The entry at `offset` and the offset after it; None if it is not whole."""
    if offset + LINE > size:
        return None
    magic, kind, ring, _, count, payload_bytes, position, before, written = _ENTRY.unpack_from(mm, offset)
    if magic != ENTRY_MAGIC or kind not in (RECORDS, CLOCK, FLUSH, SYMBOL) or payload_bytes % LINE:
        return None
    start, end = offset + LINE, offset + LINE + payload_bytes
    if end > size:
        return None
    payload: np.ndarray
    if kind == RECORDS:
        if count * RECORD_SIZE != payload_bytes:
            return None
        payload = np.frombuffer(mm, dtype=RECORD_DTYPE, count=count, offset=start).copy()
    elif kind == CLOCK:
        if pad(count * 8) != payload_bytes:
            return None
        payload = np.frombuffer(mm, dtype=np.int64, count=count, offset=start).copy()
    elif kind == SYMBOL:
        if payload_bytes != LINE:
            return None
        payload = np.frombuffer(mm, dtype=np.uint8, count=LINE, offset=start).copy()
    else:
        payload = np.zeros(0, dtype=np.int64)
    return Entry(kind, ring, position, before, written, payload, count), end


def expire(directory: Path, *, newest_day: int, retention_days: int, keep_run: int) -> list[Path]:
    """Delete the journal files of days more than `retention_days` before `newest_day`, and the
    published marks of runs with no file left (never `keep_run`'s). Returns what was deleted."""
    gone = []
    runs_left = {keep_run}
    for path in directory.glob("*.jnl"):
        parsed = _parse_name(path)
        if parsed is None:
            continue
        if parsed[0] < newest_day - retention_days:
            path.unlink(missing_ok=True)
            gone.append(path)
        else:
            runs_left.add(parsed[1])
    for mark in directory.glob("*.sent"):
        if mark.stem.isdigit() and int(mark.stem) not in runs_left:
            mark.unlink(missing_ok=True)
            gone.append(mark)
    return gone
