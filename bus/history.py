"""The output journal: every message the hub forwards, on disk, for history older than memory.

The recovery service appends each captured message (topic frame, first and last seq, the hub's
arrival time, the payload as sent) to ``<data dir>/history/<YYYYMMDD>.<run>.<n>.hist``, in
forwarding order, and answers from here what its per-topic memory no longer holds.
`docs/journal.md` ("The output journal") gives the format.

Memory stays bounded whatever the disk holds: per topic of the current run, one checkpoint
``(seq, file, offset)`` every `INDEX_EVERY` messages plus the newest record; per file, one
``(time, offset)`` every `INDEX_EVERY` records. Each record links back to the previous record
of its topic, so a `from_seq` read starts at the checkpoint past the page it wants and walks
back (at most a page plus `INDEX_EVERY` records); a ``since`` read starts at the file checkpoint
before that time and scans forward, at most `SCAN_BYTES` per call.

A file closed by a roll or a clean stop gets a sidecar, ``<file>.idx``: its time checkpoints and
the run's topic index as of its end. A restarted hub loads those and scans only the files that
have none (the one a killed hub was writing), so its start does not grow with the history.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

__all__ = ["HistoryConfig", "HistoryJournal", "Found", "INDEX_EVERY", "SCAN_BYTES"]

log = logging.getLogger("streamctl.history")

INDEX_EVERY = 512
"""A checkpoint per this many messages of a topic (and per this many records of a file)."""
SCAN_BYTES = 8 << 20
"""A ``since`` read scans at most this much of the disk per call, so a sparse pattern over a
long history cannot hold the service thread (the reply says ``more`` and where to go on)."""
_FLUSH_BYTES = 1 << 20
MAGIC = b"STCHIST\x00"
VERSION = 1
_FILE = struct.Struct("<8sHHIqq")
_REC = struct.Struct("<IIHHIqqqiq")
_REC_HEAD = struct.Struct("<II")
_REC_TAIL = struct.Struct("<HHIqqqiq")
"""A record header is the head (magic, CRC) and the tail the CRC covers, packed apart when written."""
REC_MAGIC = 0x43455248  # b"HREC"
_NO_FILE = -1
_DAY_NS = 86_400 * 1_000_000_000
_NAME = re.compile(r"^(\d{8})\.(\d+)\.(\d+)\.hist$")


class HistoryConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``publish.recovery.history``: the output journal (on when the input journal is, by default)."""

    enabled: bool | None = None
    """``null``: on when ``journal.enabled`` is (a live plant with a recovery service only)."""
    file_bytes: Annotated[int, Meta(ge=1 << 16, le=1 << 34)] = 64 << 20
    """A file is closed and the next one opened at this size (and at each UTC day)."""
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 7
    """Files whose newest message reached the hub more than this many days ago are deleted."""
    max_bytes: Annotated[int, Meta(ge=1 << 17)] = 8 << 30
    """The oldest files are deleted while the history holds more than this; at least 2 x `file_bytes`."""


class _Sidecar(msgspec.Struct, array_like=True):
    """What a closed file's ``.idx`` holds (arrays as raw int64 bytes)."""

    size: int
    records: int
    first_ts: int
    last_ts: int
    times: bytes
    offsets: bytes
    topics: dict[bytes, tuple[bytes, bytes, bytes, int, int, int, int]] | None
    """The run's topic index when the file was closed; None when it was not the run's newest."""


class Found(NamedTuple):
    """One message read back: topic frame, first seq, last seq, hub arrival (ns), payload."""

    frame: bytes
    first: int
    last: int
    ts: int
    payload: bytes


class _Record(NamedTuple):
    found: Found
    prev_file: int
    prev_off: int


@dataclass
class _File:
    """One file on disk: where it is, how far it is whole, and a sparse time index."""

    path: Path
    run: int
    number: int
    size: int = _FILE.size
    """Bytes in the file (what `flush` wrote): readers stop there."""
    records: int = 0
    first_ts: int = 0
    last_ts: int = 0
    times: array = field(default_factory=lambda: array("q"))
    offsets: array = field(default_factory=lambda: array("q"))

    def note(self, ts: int, offset: int) -> None:
        if self.records % INDEX_EVERY == 0:
            self.times.append(ts)
            self.offsets.append(offset)
        if not self.records:
            self.first_ts = ts
        self.records += 1
        self.last_ts = ts


class _Topic:
    """A topic's place on disk in the current run: checkpoints of its latest consecutive seq run."""

    __slots__ = ("seqs", "files", "offsets", "count", "last_seq", "last_file", "last_off")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.files = array("q")
        self.offsets = array("q")
        self.count = 0
        self.last_seq = -1
        self.last_file = _NO_FILE
        self.last_off = 0

    def note(self, first: int, last: int, number: int, offset: int) -> None:
        if self.last_file != _NO_FILE and first != self.last_seq + 1:
            del self.seqs[:], self.files[:], self.offsets[:]  # a new seq run: the old one no longer joins up
            self.count = 0
        if self.count % INDEX_EVERY == 0:
            self.seqs.append(first)
            self.files.append(number)
            self.offsets.append(offset)
        self.count += 1
        self.last_seq, self.last_file, self.last_off = last, number, offset

    def dump(self) -> tuple[bytes, bytes, bytes, int, int, int, int]:
        return (self.seqs.tobytes(), self.files.tobytes(), self.offsets.tobytes(), self.count, self.last_seq,
                self.last_file, self.last_off)

    @classmethod
    def load(cls, dumped: tuple[bytes, bytes, bytes, int, int, int, int]) -> _Topic:
        topic = cls()
        seqs, files, offsets, topic.count, topic.last_seq, topic.last_file, topic.last_off = dumped
        topic.seqs.frombytes(seqs)
        topic.files.frombytes(files)
        topic.offsets.frombytes(offsets)
        return topic

    def forget_files_before(self, number: int) -> None:
        keep = bisect_left(self.files, number)
        del self.seqs[:keep], self.files[:keep], self.offsets[:keep]


def _file_name(day_ns: int, run: int, number: int) -> str:
    return f"{time.strftime('%Y%m%d', time.gmtime(day_ns // 1_000_000_000))}.{run}.{number}.hist"


class HistoryJournal:
    """The hub's output journal: append in the service thread, read back in the same thread.

    Opening it scans every file in `directory` (cutting a torn tail), rebuilds the index of the
    current `run`'s files, applies retention and opens a new file: a restarted hub never
    appends to a file another process wrote.
    """

    def __init__(self, directory: Path, *, run: int, config: HistoryConfig):
        self.directory = directory
        self.run = run
        self._config = config
        self._files: list[_File] = []
        self._by_number: dict[int, _File] = {}
        """The current run's files by number."""
        self._last_number = 0
        """The highest file number the run ever used: a number is never reused, so a back link
        into a deleted file can never land in a newer one."""
        self._topics: dict[bytes, _Topic] = {}
        self._fds: dict[Path, int] = {}
        """Read descriptors, closed when their file is deleted."""
        self.last_ts = 0
        """The newest arrival time on disk: arrival times go on strictly increasing across restarts."""
        self.cut: list[tuple[Path, int]] = []
        """Torn tails cut at opening: (file, bytes removed)."""
        self.deleted: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(directory.glob("*.hist"), key=_order):
            self._load(path)
        self._files.sort(key=lambda f: (f.run, f.number))
        self._pending = bytearray()
        self._fd = -1
        self._current: _File | None = None
        self._day = -1
        self._expire(time.time_ns())

    # ------------------------------------------------------------------ opening

    def _load(self, path: Path) -> None:
        parsed = _NAME.match(path.name)
        if parsed is None:
            return
        run, number = int(parsed.group(2)), int(parsed.group(3))
        with path.open("rb") as fh:
            data = fh.read()
        if len(data) < _FILE.size:
            log.warning("history: `%s` is shorter than its header (a hub killed as it opened it); deleted", path)
            path.unlink(missing_ok=True)
            return
        magic, version, _, _, file_run, _ = _FILE.unpack_from(data)
        if magic != MAGIC or version != VERSION or file_run != run:
            log.warning("history: `%s` is not a version-%d history file of run %d; left alone", path, VERSION, run)
            return
        current = run == self.run
        if current:
            self._last_number = max(self._last_number, number)
        if self._load_sidecar(path, run, number, len(data), current):
            return
        info = _File(path, run, number)
        offset = _FILE.size
        while offset + _REC.size <= len(data):
            magic, crc, topic_len, _, size, first, last, ts, _, _ = _REC.unpack_from(data, offset)
            end = offset + _REC.size + topic_len + size
            if magic != REC_MAGIC or end > len(data) or \
                    zlib.crc32(data[offset + 8:end]) != crc:
                break
            info.note(ts, offset)
            if current:
                frame = data[offset + _REC.size:offset + _REC.size + topic_len]
                self._topics.setdefault(frame, _Topic()).note(first, last, number, offset)
            offset = end
        info.size = offset
        if offset < len(data):
            log.warning("history: cut the torn tail of `%s` at %d (%d bytes)", path, offset, len(data) - offset)
            os.truncate(path, offset)
            self.cut.append((path, len(data) - offset))
        self.last_ts = max(self.last_ts, info.last_ts)
        self._files.append(info)
        if current:
            self._by_number[number] = info
        self._write_sidecar(info, with_topics=current)

    def _load_sidecar(self, path: Path, run: int, number: int, size: int, current: bool) -> bool:
        """Take a closed file's index from its sidecar; False when it has none that fits."""
        side = path.with_name(path.name + ".idx")
        try:
            meta = msgspec.msgpack.decode(side.read_bytes(), type=_Sidecar)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return False
        if meta.size != size:
            return False
        info = _File(path, run, number, size=size, records=meta.records, first_ts=meta.first_ts,
                     last_ts=meta.last_ts)
        info.times.frombytes(meta.times)
        info.offsets.frombytes(meta.offsets)
        self.last_ts = max(self.last_ts, info.last_ts)
        self._files.append(info)
        if current:
            self._by_number[number] = info
            if meta.topics is not None:  # the state at this file's end replaces what earlier files built
                self._topics = {frame: _Topic.load(dumped) for frame, dumped in meta.topics.items()}
        return True

    def _write_sidecar(self, info: _File, *, with_topics: bool) -> None:
        """Write `info`'s sidecar (whole, then renamed into place: a half-written one never counts)."""
        topics = {frame: topic.dump() for frame, topic in self._topics.items()} if with_topics else None
        meta = _Sidecar(info.size, info.records, info.first_ts, info.last_ts, info.times.tobytes(),
                        info.offsets.tobytes(), topics)
        side = info.path.with_name(info.path.name + ".idx")
        partial = side.with_name(side.name + ".part")
        partial.write_bytes(msgspec.msgpack.encode(meta))
        partial.replace(side)

    # ------------------------------------------------------------------ writing

    def append(self, frame: bytes, first: int, last: int, ts: int, payload: bytes) -> None:
        """Buffer one message (`ts` strictly after every earlier one); as `append_many`."""
        self.append_many(((frame, first, last, ts, payload),))

    def append_many(self, records: Iterable[tuple[bytes, int, int, int, bytes]]) -> None:
        """Buffer messages ``(topic frame, first seq, last seq, ts, payload)`` in order, each `ts`
        strictly after every earlier one; written by `flush`, or here when the buffer passes 1 MiB.
        The service hands a take's messages over at once: per message, only the record is built."""
        pending, topics, file_bytes = self._pending, self._topics, self._config.file_bytes
        crc32, head, tail_of = zlib.crc32, _REC_HEAD.pack, _REC_TAIL.pack
        current = self._current
        for frame, first, last, ts, payload in records:
            size = _REC.size + len(frame) + len(payload)
            if current is None or ts // _DAY_NS != self._day or \
                    (current.records and current.size + len(pending) + size > file_bytes):
                current = self._roll(ts)
            topic = topics.get(frame)
            if topic is None:
                topic = topics[frame] = _Topic()
            offset = current.size + len(pending)
            tail = tail_of(len(frame), 0, len(payload), first, last, ts, topic.last_file,
                           topic.last_off if topic.last_file != _NO_FILE else 0)
            pending += head(REC_MAGIC, crc32(payload, crc32(frame, crc32(tail))))
            pending += tail
            pending += frame
            pending += payload
            current.note(ts, offset)
            topic.note(first, last, current.number, offset)
            self.last_ts = ts
            if len(pending) >= _FLUSH_BYTES:
                self.flush()

    def flush(self) -> None:
        """Write what is buffered (one `write` into the page cache; no fsync: a killed hub loses
        nothing, a lost machine may lose its last seconds, as the input journal's ``sync: none``)."""
        if not self._pending or self._current is None:
            return
        with memoryview(self._pending) as whole:
            done = 0
            while done < len(whole):
                done += os.write(self._fd, whole[done:])
        self._current.size += len(self._pending)
        self._pending.clear()

    def _roll(self, ts: int) -> _File:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            if self._current is not None:
                self._write_sidecar(self._current, with_topics=True)
        number = self._last_number = self._last_number + 1
        path = self.directory / _file_name(ts, self.run, number)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(self._fd, _FILE.pack(MAGIC, VERSION, 0, number, self.run, time.time_ns()))
        info = _File(path, self.run, number)
        self._files.append(info)
        self._by_number[number] = info
        self._current, self._day = info, ts // _DAY_NS
        self._expire(ts)
        return info

    def _expire(self, now_ns: int) -> None:
        """Delete the oldest files while they are older than `retention_days` or the history
        holds more than `max_bytes` (never the file being written)."""
        horizon = now_ns - self._config.retention_days * _DAY_NS
        total = sum(f.size for f in self._files)
        while self._files and self._files[0] is not self._current:
            oldest = self._files[0]
            if oldest.last_ts >= horizon and total <= self._config.max_bytes:
                break
            self._files.pop(0)
            total -= oldest.size
            oldest.path.unlink(missing_ok=True)
            oldest.path.with_name(oldest.path.name + ".idx").unlink(missing_ok=True)
            self.deleted.append(oldest.path)
            fd = self._fds.pop(oldest.path, None)
            if fd is not None:
                os.close(fd)
            if oldest.run == self.run:
                self._by_number.pop(oldest.number, None)
        first_kept = min(self._by_number, default=1 << 62)
        for topic in self._topics.values():
            topic.forget_files_before(first_kept)

    def close(self) -> None:
        try:
            self.flush()
            if self._current is not None and self._fd >= 0:
                self._write_sidecar(self._current, with_topics=True)
        finally:
            for fd in [self._fd, *self._fds.values()]:
                if fd >= 0:
                    os.close(fd)
            self._fd = -1
            self._fds.clear()

    # ------------------------------------------------------------------ reading

    def index_size(self) -> tuple[int, int]:
        """Checkpoints held: (over every topic, over every file); what bounds the index's memory."""
        return (sum(len(t.seqs) for t in self._topics.values()), sum(len(f.times) for f in self._files))

    def topics(self) -> list[bytes]:
        return list(self._topics)

    def newest(self, frame: bytes) -> Found | None:
        """The newest message of a topic in the current run, if its file is still there."""
        topic = self._topics.get(frame)
        if topic is None or topic.last_file == _NO_FILE:
            return None
        record = self._record_at(topic.last_file, topic.last_off)
        return None if record is None else record.found

    def from_seq(self, frame: bytes, from_seq: int, limit: int) -> tuple[list[Found], bool, bool]:
        """Up to `limit` messages of a topic's latest seq run in this run whose last seq >=
        `from_seq`, oldest first; whether the disk still holds `from_seq`; whether more follow."""
        topic = self._topics.get(frame)
        if topic is None or topic.last_file == _NO_FILE:
            return [], False, False
        from_seq = max(from_seq, 1)  # a publisher's first seq is 1: nothing before it is missing
        at = bisect_left(topic.seqs, from_seq + limit)
        newest = at >= len(topic.seqs)
        number, offset = (topic.last_file, topic.last_off) if newest else (topic.files[at], topic.offsets[at])
        walked: list[Found] = []
        while number != _NO_FILE:
            record = self._record_at(number, offset)
            if record is None or (walked and record.found.last != walked[-1].first - 1):
                break  # the file is gone, or the seq run before this one
            walked.append(record.found)
            if record.found.first <= from_seq:
                break
            number, offset = record.prev_file, record.prev_off
        complete = bool(walked) and walked[-1].first <= from_seq
        walked.reverse()
        found = [m for m in walked if m.last >= from_seq]
        return found[:limit], complete, len(found) > limit or not newest

    def since(self, prefix: bytes, since_ns: int, limit: int) -> tuple[list[Found], int | None]:
        """Up to `limit` messages of topics starting with `prefix` that reached the hub at or
        after `since_ns`, in that order, across runs; and where to go on (None: nothing more on disk)."""
        found: list[Found] = []
        scanned = 0
        for info in list(self._files):
            if info.last_ts < since_ns or not info.records:
                continue
            at = bisect_right(info.times, since_ns) - 1
            start = info.offsets[at] if at >= 0 else _FILE.size
            fd = self._fd_of(info)
            if fd is None:
                continue
            with mmap.mmap(fd, info.size, access=mmap.ACCESS_READ) as data:
                offset = start
                while offset + _REC.size <= info.size:
                    _, _, topic_len, _, size, first, last, ts, _, _ = _REC.unpack_from(data, offset)
                    body = offset + _REC.size
                    end = body + topic_len + size
                    scanned += end - offset
                    offset = end
                    if ts < since_ns:
                        continue
                    frame = data[body:body + topic_len]
                    if frame.startswith(prefix):
                        if len(found) == limit:
                            return found, ts
                        found.append(Found(frame, first, last, ts, data[body + topic_len:end]))
                    if scanned >= SCAN_BYTES:
                        return found, ts + 1
        return found, None

    def _fd_of(self, info: _File) -> int | None:
        fd = self._fds.get(info.path)
        if fd is None:
            try:
                fd = self._fds[info.path] = os.open(info.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
        return fd

    def _record_at(self, number: int, offset: int) -> _Record | None:
        info = self._by_number.get(number)
        if info is None or offset + _REC.size > info.size:
            return None
        fd = self._fd_of(info)
        if fd is None:
            return None
        head = os.pread(fd, _REC.size, offset)
        magic, _, topic_len, _, size, first, last, ts, prev_file, prev_off = _REC.unpack(head)
        if magic != REC_MAGIC:
            return None
        body = os.pread(fd, topic_len + size, offset + _REC.size)
        return _Record(Found(body[:topic_len], first, last, ts, body[topic_len:]), prev_file, prev_off)


def _order(path: Path) -> tuple[int, int]:
    parsed = _NAME.match(path.name)
    return (int(parsed.group(2)), int(parsed.group(3))) if parsed else (0, 0)
