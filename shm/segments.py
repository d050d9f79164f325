"""Shared-memory segment lifecycle: naming, the common header, space checks, stale sweep.

Every segment of ours is a POSIX shared-memory object named ``stc_<plant>_<purpose...>``,
so `sweep` can find it in ``/dev/shm``. Each starts with the same 64-byte header prefix
(magic, layout version, kind, creator pid and start time, creation time, plant), so a reader
refuses a segment of another kind or layout, and the next ``up``/``clean`` can remove a
segment whose creator died (pid reuse is caught by the start time).

The resource tracker (CPython gh-82300) never owns our segments: on Python 3.11 and 3.12
``SharedMemory`` registers a name even when it only attaches, and the tracker of an
independent process (``streamctl status``) would unlink a running plant's segments when it
exits. Rather than register and unregister in every process (two processes that share one
tracker race and make it print ``KeyError`` tracebacks), we never register: the objects are
opened with ``shm_open`` and mapped with ``mmap`` directly, which is what
``SharedMemory(track=False)`` does on 3.13. Cleanup is explicit: `Segment.unlink` by the
owner on stop and `sweep` for segments whose creator is dead.
"""

from __future__ import annotations

import enum
import errno
import mmap
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import psutil

try:  # the C module behind multiprocessing.shared_memory on every POSIX CPython
    import _posixshmem
except ImportError as exc:  # pragma: no cover - Windows
    raise ImportError("streamctl.shm needs POSIX shared memory (Linux or macOS)") from exc

_View = TypeVar("_View")

__all__ = [
    "PREFIX",
    "HEADER_SIZE",
    "SHM_DIR",
    "SegmentKind",
    "SegmentHeader",
    "Segment",
    "SegmentError",
    "ShmSpaceError",
    "segment_name",
    "open_segment",
    "attach_view",
    "SegmentView",
    "check_room",
    "list_segments",
    "sweep",
    "creator_alive",
    "process_alive",
    "segment_users",
    "orphaned",
    "read_header",
    "LAYOUT_VERSION",
]

PREFIX = "stc_"
"""Every segment of ours starts with this, so `sweep` can find them."""

HEADER_SIZE = 64
"""Bytes of the common header prefix; kind-specific headers follow it."""

SHM_DIR = "/dev/shm"
"""Where Linux shows POSIX shared-memory objects as files."""

_PART = re.compile(r"^[a-z0-9_-]+$")
_NAME_MAX = 255
_PLANT_BYTES = 24
_START_TOLERANCE = 1.0  # seconds: psutil create_time jitter (boot-time clock adjustments)
_GRACE = 2.0  # seconds: a segment younger than this may still be writing its header

# magic(8s) version(I) kind(I) creator_pid(q) creator_start(d) created_ns(q) plant(24s)
_HDR = struct.Struct("<8sIIqdq24s")
assert _HDR.size == HEADER_SIZE


class SegmentKind(enum.IntEnum):
    """What a segment holds; each kind has its own magic and layout version."""

    RING = 1
    REGISTRY = 2
    STATS = 3


_MAGIC = {
    SegmentKind.RING: b"STCRING\x00",
    SegmentKind.REGISTRY: b"STCSYMS\x00",
    SegmentKind.STATS: b"STCSTAT\x00",
}
_KIND_OF_MAGIC = {v: k for k, v in _MAGIC.items()}

LAYOUT_VERSION = {
    SegmentKind.RING: 2,
    SegmentKind.REGISTRY: 1,
    SegmentKind.STATS: 3,
}
"""Layout version per kind: bump when a kind's layout changes, so old readers refuse."""


class SegmentError(RuntimeError):
    """A segment could not be created, opened or used as asked."""


class ShmSpaceError(SegmentError):
    """Not enough free space in the shared-memory filesystem."""


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The decoded common header of a segment."""

    magic: bytes
    version: int
    kind: SegmentKind | None
    creator_pid: int
    creator_start: float
    created_ns: int
    plant: str


def segment_name(plant: str, *parts: str) -> str:
    """``stc_<plant>_<part>_<part>...``; every piece must match ``[a-z0-9_-]+``."""
    if not parts:
        raise ValueError("`parts` must name the purpose of the segment, was empty")
    for label, value in [("plant", plant), *(("part", p) for p in parts)]:
        if not isinstance(value, str) or not _PART.match(value):
            raise ValueError(f"`{label}` must match [a-z0-9_-]+, was `{value!r}`")
    if len(plant.encode()) > _PLANT_BYTES:
        raise ValueError(f"`plant` must be at most {_PLANT_BYTES} bytes, was `{plant}`")
    name = PREFIX + "_".join((plant, *parts))
    if len(name) > _NAME_MAX:
        raise ValueError(f"segment name must be at most {_NAME_MAX} bytes, was `{name}` ({len(name)})")
    return name


def _check_name(name: str) -> None:
    if not name.startswith(PREFIX) or not _PART.match(name) or len(name) > _NAME_MAX:
        raise ValueError(f"`name` must be `{PREFIX}` followed by [a-z0-9_-]+, was `{name!r}`")


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_room(total_bytes: int, path: str = SHM_DIR, *, free_bytes: int | None = None) -> None:
    """Refuse (`ShmSpaceError`) when `total_bytes` do not fit in the filesystem at `path`.

    Call before creating anything: a tmpfs lets you create a segment larger than its free
    space, and the first write to an unbacked page then kills the writer with SIGBUS.
    `free_bytes` overrides the measured free space (for callers that already know it).
    """
    free = _free_bytes(path) if free_bytes is None else free_bytes
    if total_bytes > free:
        raise ShmSpaceError(
            f"shared memory needs {_human(total_bytes)} but `{path}` has {_human(free)} free; "
            "give the container more (`docker run --shm-size=1g`), free old segments "
            "(`streamctl clean`), or lower `rings.capacity`"
        )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _start_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


_SELF_START: tuple[int, float] = (0, 0.0)  # (pid, start): keyed by pid so a forked child re-reads


def _own_start() -> float:
    global _SELF_START
    pid = os.getpid()
    if _SELF_START[0] != pid:
        _SELF_START = (pid, _start_time(pid))
    return _SELF_START[1]


class Segment:
    """One mapped shared-memory object with the common header.

    Views over `buf` (numpy arrays, casts) hold an export of the mapping: `close` refuses
    with `SegmentError` while any exists, so a view can never outlive the mapping.
    """

    __slots__ = ("name", "size", "_mmap", "buf", "header")

    def __init__(self, name: str, mm: mmap.mmap, header: SegmentHeader) -> None:
        self.name = name
        self.size = len(mm)
        self._mmap: mmap.mmap | None = mm
        self.buf: memoryview | None = memoryview(mm)
        self.header = header

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls, name: str, size: int, *, kind: SegmentKind, plant: str = "", check_space: bool = True
    ) -> Segment:
        """Create a zero-filled segment of `size` bytes with its header written (magic last)."""
        _check_name(name)
        if size < HEADER_SIZE:
            raise ValueError(f"`size` must be >= {HEADER_SIZE}, was {size}")
        plant_b = plant.encode()
        if len(plant_b) > _PLANT_BYTES:
            raise ValueError(f"`plant` must be at most {_PLANT_BYTES} bytes, was `{plant}`")
        if check_space:
            check_room(size)
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:
            raise SegmentError(
                f"segment `{name}` already exists (another plant running, or stale: `streamctl clean`)"
            ) from None
        try:
            try:
                os.ftruncate(fd, size)
                _allocate(fd, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                    raise ShmSpaceError(
                        f"no room for segment `{name}` ({_human(size)}) in shared memory: "
                        "give the container more (`docker run --shm-size=1g`) or lower `rings.capacity`"
                    ) from exc
                raise
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _unlink_quiet(name)
            raise
        os.close(fd)
        try:
            return cls._initialized(name, mm, kind, plant, plant_b)
        except BaseException:  # e.g. SIGTERM raised while the pages are touched: no name left behind
            _unlink_quiet(name)
            try:
                mm.close()
            except BufferError:  # a view still holds it: the mapping goes with the process
                pass
            raise

    @classmethod
    def _initialized(cls, name: str, mm: mmap.mmap, kind: SegmentKind, plant: str, plant_b: bytes) -> Segment:
        """The new segment `mm`, its pages touched and its header written (magic last)."""
        _touch(mm)
        header = SegmentHeader(
            magic=_MAGIC[kind],
            version=LAYOUT_VERSION[kind],
            kind=kind,
            creator_pid=os.getpid(),
            creator_start=_own_start(),
            created_ns=time.time_ns(),
            plant=plant,
        )
        packed = _HDR.pack(
            b"\x00" * 8,
            header.version,
            int(kind),
            header.creator_pid,
            header.creator_start,
            header.created_ns,
            plant_b,
        )
        mm[8:HEADER_SIZE] = packed[8:]
        mm[0:8] = header.magic  # written last: a half-made segment has no magic
        return cls(name, mm, header)

    @classmethod
    def open(cls, name: str, *, kind: SegmentKind | None = None) -> Segment:
        """Map an existing segment; refuse a magic, kind or layout-version mismatch."""
        _check_name(name)
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            raise SegmentError(f"segment `{name}` does not exist (is the plant up?)") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise SegmentError(f"segment `{name}` is {size} bytes, too small for a header")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            header = _decode(mm[:HEADER_SIZE])
            _validate(name, header, kind)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, header)

    # ------------------------------------------------------------------ lifecycle
    @property
    def closed(self) -> bool:
        return self._mmap is None

    def close(self) -> None:
        """Unmap. Views over `buf` must be dropped first (else `SegmentError`). Idempotent."""
        if self._mmap is None:
            return
        try:
            if self.buf is not None:
                self.buf.release()
            self._mmap.close()
        except BufferError:
            raise SegmentError(
                f"segment `{self.name}`: views over its memory still exist; drop them before close()"
            ) from None
        self.buf = None
        self._mmap = None

    def unlink(self) -> None:
        """Remove the name from the system; mappings stay valid until closed. Idempotent."""
        _unlink_quiet(self.name)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, size={self.size}, kind={self.header.kind!r})"


def _allocate(fd: int, size: int) -> None:
    """Reserve every page now, so a full tmpfs fails here (ENOSPC) instead of SIGBUS later."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:  # pragma: no cover - macOS
        return
    try:
        fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
            raise


_ZEROS = bytes(1 << 20)


def _touch(mm: mmap.mmap) -> None:
    """Write zeros over every page (pages are allocated now, not on the first record)."""
    size = len(mm)
    for start in range(0, size, len(_ZEROS)):
        end = min(size, start + len(_ZEROS))
        mm[start:end] = _ZEROS[: end - start]


def _unlink_quiet(name: str) -> bool:
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


def _decode(raw: bytes) -> SegmentHeader:
    magic, version, kind, pid, start, created, plant = _HDR.unpack(raw)
    return SegmentHeader(
        magic=magic,
        version=version,
        kind=_KIND_OF_MAGIC.get(magic),
        creator_pid=pid,
        creator_start=start,
        created_ns=created,
        plant=plant.rstrip(b"\x00").decode("utf-8", "replace"),
    )


def _validate(name: str, header: SegmentHeader, kind: SegmentKind | None) -> None:
    if header.kind is None:
        raise SegmentError(
            f"segment `{name}` has magic `{header.magic!r}`, not a streamctl segment (or not initialized yet)"
        )
    if kind is not None and header.kind is not kind:
        raise SegmentError(f"segment `{name}` is a {header.kind.name} segment, expected {kind.name}")
    expected = LAYOUT_VERSION[header.kind]
    if header.version != expected:
        raise SegmentError(
            f"segment `{name}` has layout version {header.version}, this streamctl reads {expected}; "
            "stop the plant that made it, or `streamctl clean` it"
        )


def open_segment(name: str, kind: SegmentKind | None = None) -> Segment:
    """Attach to segment `name` (see `Segment.open`)."""
    return Segment.open(name, kind=kind)


class SegmentView:
    """What every object mapped over one segment (ring, registry, process table) shares:
    `unlink` removes the segment's name, and ``with`` closes the view."""

    __slots__ = ()
    _seg: Segment

    def close(self) -> None:
        raise NotImplementedError

    def unlink(self) -> None:
        """Remove the segment's name (the owner, on stop). Attached processes keep their mapping."""
        self._seg.unlink()

    @property
    def header(self) -> SegmentHeader:
        """The common header: kind, layout, creator (pid and start time), plant."""
        return self._seg.header

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_view(name: str, kind: SegmentKind, view: Callable[[Segment], _View]) -> _View:
    """Map segment `name` and build `view(segment)` over it (a ring, a registry, a table).

    If building fails (a layout the view refuses), the mapping is closed again, so a refused
    attach never leaves a mapping open in the attaching process.
    """
    seg = Segment.open(name, kind=kind)
    try:
        return view(seg)
    except BaseException:
        seg.close()
        raise


def read_header(name: str) -> SegmentHeader | None:
    """The header of `name` read from the filesystem, or None when unreadable/too short."""
    try:
        with open(Path(SHM_DIR) / name, "rb") as fh:
            raw = fh.read(HEADER_SIZE)
    except OSError:
        return None
    if len(raw) < HEADER_SIZE:
        return None
    return _decode(raw)


def process_alive(pid: int, started: float | None = None) -> bool:
    """Is `pid` running and (when `started` is given) the same process that was recorded?

    The one liveness check of the plant: segment creators here, supervisors in the run manifest.
    """
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) <= _START_TOLERANCE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # pragma: no cover - exists, not ours: assume alive
        return True


def creator_alive(header: SegmentHeader) -> bool:
    """Is the process that created the segment still running (same pid *and* start time)?"""
    return process_alive(header.creator_pid, header.creator_start)


def list_segments(plant: str | None = None) -> list[tuple[str, SegmentHeader | None]]:
    """Our segments (name, header or None when unreadable), optionally of one plant, by name."""
    try:
        names = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:  # pragma: no cover - no /dev/shm (macOS)
        return []
    out = []
    for name in names:
        header = read_header(name)
        if plant is not None:
            if header is not None and header.kind is not None:
                if header.plant != plant:
                    continue
            elif not name.startswith(f"{PREFIX}{plant}_"):
                continue
        out.append((name, header))
    return out


def _young(name: str) -> bool:
    try:
        st = os.stat(Path(SHM_DIR) / name)
    except OSError:
        return False
    return time.time() - st.st_mtime < _GRACE


def segment_users() -> dict[str, set[int]]:
    """Our segments that some other live process has mapped, with those processes' pids.

    Read from ``/proc/<pid>/maps``: the kernel's word on who still uses a segment, whoever
    made it and whatever manifest or process table says (a plant child orphaned by a killed
    supervisor, a `status` reading it). The calling process is left out.
    """
    users: dict[str, set[int]] = {}
    prefix = f" {SHM_DIR}/{PREFIX}".encode()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/maps", "rb") as fh:
                maps = fh.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for line in maps.splitlines():
            at = line.find(prefix)
            if at >= 0 and not line.endswith(b" (deleted)"):
                users.setdefault(line[at + len(SHM_DIR) + 2:].decode(), set()).add(int(entry.name))
    return users


def _stale(name: str, header: SegmentHeader | None) -> bool:
    """Its creator is dead (pid and start time), or it is garbage nobody is writing right now."""
    if header is None or header.kind is None:
        return not _young(name)
    return not creator_alive(header)  # whatever its layout version


def sweep(plant: str | None = None) -> list[str]:
    """Remove our segments whose creator is dead or whose header is garbage; return their names.

    A garbage header younger than a couple of seconds is left alone: its creator may be
    writing it right now. So is a segment another live process still maps (`segment_users`):
    its creator may be dead while its users (orphaned children) still read and write it.
    """
    in_use = segment_users()
    return [name for name, header in list_segments(plant)
            if _stale(name, header) and name not in in_use and _unlink_quiet(name)]


def orphaned(plant: str | None = None) -> dict[str, set[int]]:
    """Segments whose creator is dead but that live processes still map (which `sweep` keeps),
    with those processes' pids."""
    in_use = segment_users()
    return {name: in_use[name] for name, header in list_segments(plant) if name in in_use and _stale(name, header)}
