"""Segment lifecycle: names, header checks, the resource-tracker rule, space checks, sweep."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from _shmutil import no_leaks, plant_segments, unique_plant

from streamctl.shm.records import RECORD_DTYPE, RECORD_SIZE
from streamctl.shm.ring import Ring
from streamctl.shm.segments import (
    LAYOUT_VERSION,
    SHM_DIR,
    Segment,
    SegmentError,
    SegmentKind,
    ShmSpaceError,
    check_room,
    creator_alive,
    list_segments,
    open_segment,
    orphaned,
    read_header,
    segment_name,
    sweep,
)


@pytest.fixture
def plant():
    with no_leaks(unique_plant("seg")) as name:
        yield name


def test_segment_name_grammar():
    assert segment_name("demo", "ring", "feed-a", "p0") == "stc_demo_ring_feed-a_p0"
    with pytest.raises(ValueError, match=r"`part` must match \[a-z0-9_-\]\+, was `'Ring'`"):
        segment_name("demo", "Ring")
    with pytest.raises(ValueError, match=r"`plant` must match"):
        segment_name("de mo", "ring")
    with pytest.raises(ValueError, match=r"`parts` must name the purpose"):
        segment_name("demo")


def test_header_is_written_and_read_back(plant):
    seg = Segment.create(segment_name(plant, "x"), 4096, kind=SegmentKind.STATS, plant=plant)
    try:
        other = open_segment(seg.name, SegmentKind.STATS)
        h = other.header
        assert h.kind is SegmentKind.STATS and h.plant == plant and h.version == LAYOUT_VERSION[h.kind]
        assert h.creator_pid == os.getpid() and creator_alive(h)
        assert abs(h.created_ns - time.time_ns()) < 60e9
        assert read_header(seg.name) == h
        other.close()
    finally:
        seg.close()
        seg.unlink()


@contextmanager
def _owned(seg: Segment | Ring) -> Iterator[Segment | Ring]:
    """`seg` for the test's body, closed and unlinked afterwards even when the body fails."""
    try:
        yield seg
    finally:
        seg.close()
        seg.unlink()


def test_create_refuses_an_existing_name(plant):
    with _owned(Segment.create(segment_name(plant, "x"), 4096, kind=SegmentKind.RING, plant=plant)) as seg:
        with pytest.raises(SegmentError, match=r"segment `stc_.*_x` already exists"):
            Segment.create(seg.name, 4096, kind=SegmentKind.RING, plant=plant)


def _poke(name: str, offset: int, data: bytes) -> None:
    with open(os.path.join(SHM_DIR, name), "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@pytest.mark.parametrize(
    ("offset", "data", "message"),
    [
        (0, b"NOTOURS\x00", r"has magic `b'NOTOURS\\x00'`, not a streamctl segment"),
        (8, struct.pack("<I", 99), r"has layout version 99, this streamctl reads 2"),
    ],
)
def test_attach_refuses_magic_or_version_mismatch(plant, offset, data, message):
    with _owned(Ring.create(segment_name(plant, "ring"), 8, plant=plant)) as ring:
        _poke(ring.name, offset, data)
        with pytest.raises(SegmentError, match=message):
            Ring.attach(ring.name)


def test_close_refuses_while_views_exist(plant):
    seg = Segment.create(segment_name(plant, "x"), 4096, kind=SegmentKind.RING, plant=plant)
    try:
        view = np.frombuffer(seg.buf, dtype=np.uint8)
        with pytest.raises(SegmentError, match="views over its memory still exist"):
            seg.close()
        assert view[0] == ord("S")  # still mapped: the view is safe to use
        del view
        seg.close()
        assert seg.closed
        seg.close()
    finally:
        seg.unlink()


_ATTACH_AND_EXIT = """
import sys
from streamctl.shm.ring import Ring
ring = Ring.attach(sys.argv[1])
print(ring.produced, ring.capacity)
ring.close()
"""


def test_independent_process_attaching_leaves_segment_intact(plant):
    """gh-82300: an unrelated process (own resource tracker) must not unlink our segment."""
    ring = Ring.create(segment_name(plant, "ring"), 16, plant=plant)
    try:
        ring.publish(np.zeros(3, dtype=RECORD_DTYPE))
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-W", "always", "-c", _ATTACH_AND_EXIT, ring.name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.split() == ["3", "16"]
            assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
            assert os.path.exists(os.path.join(SHM_DIR, ring.name))
        again = Ring.attach(ring.name)
        assert again.produced == 3
        again.close()
    finally:
        ring.close()
        ring.unlink()


def _create_and_hang(name: str, plant: str, conn) -> None:
    seg = Segment.create(name, 4096, kind=SegmentKind.RING, plant=plant)
    conn.send(seg.header.creator_pid)
    time.sleep(120)  # killed by the test long before


def test_sweep_removes_segments_of_dead_creators_only(plant):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stale = segment_name(plant, "stale")
    proc = ctx.Process(target=_create_and_hang, args=(stale, plant, child))
    proc.start()
    live = Segment.create(segment_name(plant, "live"), 4096, kind=SegmentKind.RING, plant=plant)
    try:
        assert parent.poll(60), "child did not create its segment"
        assert parent.recv() == proc.pid
        assert creator_alive(read_header(stale))
        assert sweep(plant) == []  # creator alive: kept
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert not creator_alive(read_header(stale))
        assert sweep(plant) == [stale]
        assert plant_segments(plant) == [live.name]
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        live.close()
        live.unlink()


def test_sweep_detects_pid_reuse_by_start_time(plant):
    seg = Segment.create(segment_name(plant, "reused"), 4096, kind=SegmentKind.RING, plant=plant)
    try:
        start = seg.header.creator_start
        _poke(seg.name, 24, struct.pack("<d", start - 3600))  # same pid, another process's start
        assert not creator_alive(read_header(seg.name))
        assert sweep(plant) == [seg.name]
    finally:
        seg.close()
        seg.unlink()


_ATTACH_AND_HOLD = """
import sys
from streamctl.shm.segments import Segment
seg = Segment.open(sys.argv[1])
print("attached", flush=True)
sys.stdin.read()  # holds the mapping until the test closes our stdin
"""


def test_sweep_keeps_a_dead_creators_segment_while_a_live_process_maps_it(plant):
    """A killed supervisor's segments stay while its orphaned children still use them."""
    seg = Segment.create(segment_name(plant, "orphan"), 4096, kind=SegmentKind.RING, plant=plant)
    user = subprocess.Popen([sys.executable, "-c", _ATTACH_AND_HOLD, seg.name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout is not None and user.stdin is not None
        assert user.stdout.readline() == "attached\n"
        _poke(seg.name, 24, struct.pack("<d", seg.header.creator_start - 3600))  # its creator is "dead"
        assert not creator_alive(read_header(seg.name))
        assert sweep(plant) == []
        assert orphaned(plant) == {seg.name: {user.pid}}
        user.stdin.close()
        user.wait(30)
        assert orphaned(plant) == {}
        assert sweep(plant) == [seg.name]
    finally:
        user.kill()
        user.wait(10)
        seg.close()
        seg.unlink()


def test_sweep_removes_old_garbage_but_not_a_segment_being_made(plant):
    old = f"stc_{plant}_garbage"
    young = f"stc_{plant}_young"
    for name in (old, young):
        with open(os.path.join(SHM_DIR, name), "wb") as fh:
            fh.write(b"\xff" * 100)
    past = time.time() - 3600
    os.utime(os.path.join(SHM_DIR, old), (past, past))
    try:
        assert [n for n, h in list_segments(plant)] == [old, young]
        assert sweep(plant) == [old]
    finally:
        for name in (old, young):
            if os.path.exists(os.path.join(SHM_DIR, name)):
                os.unlink(os.path.join(SHM_DIR, name))


def test_sweep_filters_by_plant_from_the_header(plant):
    """Plant `a` must not sweep plant `a_b` (names alone are ambiguous)."""
    other = plant + "_b"
    with no_leaks(other):
        mine = Segment.create(segment_name(plant, "x"), 4096, kind=SegmentKind.RING, plant=plant)
        theirs = Segment.create(segment_name(other, "x"), 4096, kind=SegmentKind.RING, plant=other)
        try:
            assert [n for n, _ in list_segments(plant)] == [mine.name]
            assert [n for n, _ in list_segments(other)] == [theirs.name]
        finally:
            for seg in (mine, theirs):
                seg.close()
                seg.unlink()


def test_check_room_refuses_with_a_clear_message():
    with pytest.raises(ShmSpaceError, match=r"needs 2\.0 MiB but `/x` has 1\.0 MiB free.*--shm-size.*rings\.capacity"):
        check_room(2 << 20, "/x", free_bytes=1 << 20)
    check_room(1 << 20, "/x", free_bytes=1 << 20)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 1 MiB tmpfs (we run as root in CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "shm"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)


def test_too_small_tmpfs_is_refused(tiny_tmpfs):
    check_room(512 << 10, tiny_tmpfs)
    with pytest.raises(ShmSpaceError, match=rf"needs 2\.0 MiB but `{tiny_tmpfs}` has .* free"):
        check_room(2 << 20, tiny_tmpfs)


def test_ring_too_big_for_dev_shm_is_refused_before_anything_exists(plant):
    free = os.statvfs(SHM_DIR).f_bavail * os.statvfs(SHM_DIR).f_frsize
    capacity = 1 << max(1, (free // RECORD_SIZE).bit_length())  # more records than fit
    with pytest.raises(ShmSpaceError, match=r"shared memory needs .* but `/dev/shm` has .* free"):
        Ring.create(segment_name(plant, "huge"), capacity, plant=plant)
    assert plant_segments(plant) == []
