"""The journal's mapped appender: what is appended is the file, byte for byte, across extents and
through the ``pwrite`` path; pages are faulted in ahead; a worker killed while appending leaves
whole entries then zeros, which the reader cuts; a batch the ring copied into the journal's own
room journals exactly as a copied one (issue 9, item 1: the journal's cost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.process.journal.files import RECORDS, read_entries, run_files
from streamctl.process.journal.mapped import AHEAD, MappedAppender
from streamctl.process.journal.settings import JournalConfig
from streamctl.process.journal.writer import JournalWriter
from streamctl.shm.records import RECORD_DTYPE
from tests._common import wait_until

PAGE = 4096


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=5, max_value=5 * PAGE), min_size=1, max_size=40),
       resume_at=st.integers(min_value=0, max_value=39))
def test_the_file_is_what_was_appended_across_extents_and_a_resume(tmp_path_factory, sizes, resume_at):
    """Extents of 2 pages with 1 page of slack: parts cross extents, and parts over 3 pages take
    the ``pwrite`` path; a second appender resumes where the first closed."""
    path = tmp_path_factory.mktemp("mapped") / "f.jnl"
    rng = np.random.default_rng(len(sizes))
    parts = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]
    appender = MappedAppender(path, 0, extent=2 * PAGE, slack=PAGE)
    for i, part in enumerate(parts):
        if i == resume_at:
            appender.close()
            appender = MappedAppender(path, path.stat().st_size, extent=2 * PAGE, slack=PAGE)
        assert appender.append([part[:4 + i % 2], part[4 + i % 2:]]) == len(part)
    appender.close()
    assert path.read_bytes() == b"".join(parts)


def test_the_thread_faults_pages_in_ahead_and_stops_at_close(tmp_path):
    before = {t.ident for t in threading.enumerate()}
    appender = MappedAppender(tmp_path / "f.jnl")
    appender.append([bytes(64)])
    wait_until(lambda: appender.populated >= AHEAD, timeout=30, what="pages faulted in ahead")
    appender.append([bytes(AHEAD // 2)])  # a nudge: the thread moves on
    wait_until(lambda: appender.populated >= AHEAD // 2 + 64 + AHEAD, timeout=30, what="the window to move")
    appender.close()
    assert {t.ident for t in threading.enumerate()} == before
    assert (tmp_path / "f.jnl").stat().st_size == 64 + AHEAD // 2


def test_a_pinned_process_faults_its_pages_on_another_core(tmp_path):
    """A worker is pinned to one core; a burst of page faults can hold a core for 10-20 ms, so the
    thread faulting pages ahead runs on the other cores (with one core, on that one)."""
    everything = os.sched_getaffinity(0)
    core = min(everything)
    os.sched_setaffinity(0, {core})
    try:
        appender = MappedAppender(tmp_path / "f.jnl")
    finally:
        os.sched_setaffinity(0, everything)
    try:
        [thread] = [t for t in threading.enumerate() if t.name == "journal-populate"]
        assert thread.native_id is not None
        others = set(range(os.cpu_count() or 1)) - {core}
        wait_until(lambda: os.sched_getaffinity(thread.native_id) == (others or {core}), timeout=30,
                   what="the populating thread to leave the pinned core")
    finally:
        appender.close()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from streamctl.process.journal.settings import JournalConfig
    from streamctl.process.journal.writer import JournalWriter
    from streamctl.shm.records import RECORD_DTYPE
    writer = JournalWriter(Path(sys.argv[1]), partition=0, run=1, config=JournalConfig(sync="none"))
    position = 0
    while True:
        n = 1 + position % 3000
        batch = np.zeros(n, dtype=RECORD_DTYPE)
        batch["ts_event"] = 1_719_792_000_000_000_000 + np.arange(position, position + n)
        batch["price"] = np.arange(position, position + n)
        writer.append_records(0, position, batch, 0)
        position += n
        if position > 200_000:
            print(position, flush=True)
""")


def test_a_writer_killed_while_appending_leaves_whole_entries_then_zeros(tmp_path):
    """SIGKILL at some point of a stream of batches: every entry read back is whole and right,
    the zeros after the last are cut, and appending would go on from there."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # past 200,000 records: kill it mid-stream
        assert line, "the writer died before it wrote 200,000 records"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    (path,) = run_files(tmp_path, 1)
    assert path.stat().st_size % (64 << 20) == 8 << 20  # left at a mapped extent's end, zeros after the entries
    entries = list(read_entries(path, partition=0, repair=True))
    assert sum(len(e.payload) for e in entries) >= 200_000
    position = 0
    for entry in entries:
        assert entry.kind == RECORDS and entry.position == position
        assert np.array_equal(entry.payload["price"], np.arange(position, position + len(entry.payload)))
        position += len(entry.payload)
    assert path.stat().st_size == 64 + sum(64 + 64 * len(e.payload) for e in entries)


def _entries_of(directory):
    return [(e.kind, e.ring, e.position, e.messages_before, e.count, e.payload.tobytes())
            for path in run_files(directory, RUN) for e in read_entries(path, partition=0, repair=False)]


RUN = 7
DAY_NS = 86_400 * 10**9


def _day_batch(n: int, day: int, start: int) -> np.ndarray:
    batch = np.zeros(n, dtype=RECORD_DTYPE)
    batch["ts_event"] = day * DAY_NS + np.arange(start, start + n)
    batch["price"] = np.arange(start, start + n)
    batch["instrument_id"] = start % 7
    return batch


def test_a_batch_copied_into_the_reserved_room_journals_as_a_copied_one(tmp_path):
    """The worker's way (the ring copies into `reserve_records`' room, then only the header is
    written) gives the entries a plain append gives, including when symbol entries must go first
    or the batch opens the next day's file (then the batch moves, and the returned array says
    where it now is)."""
    day = 19_905
    plan = [(5, day, None), (4096, day, None), (3, day, "ESU4"), (10, day + 1, None), (1, day + 1, "NQU4"),
            (200, day + 1, None)]
    config = JournalConfig(sync="none")
    plain = JournalWriter(tmp_path / "plain", partition=0, run=RUN, config=config)
    inplace = JournalWriter(tmp_path / "inplace", partition=0, run=RUN, config=config)
    position = 0
    moved = 0
    for n, batch_day, symbol in plan:
        batch = _day_batch(n, batch_day, position)
        room = inplace.reserve_records(4096)
        if room is not None:
            room[:n] = batch  # what Ring.consume(out=room) does
            given = room[:n]
        else:
            given = batch.copy()
        for writer in (plain, inplace):
            if symbol is not None:
                writer.append_symbol(0, position % 7, symbol, position)
        assert np.array_equal(plain.append_records(0, position, batch, position), batch)
        placed = inplace.append_records(0, position, given, position)
        assert np.array_equal(placed, batch)
        moved += room is not None and not np.may_share_memory(placed, room)
        position += n
    plain.close()
    inplace.close()
    assert moved == 3  # the two batches after a new symbol, and the one opening the next day
    assert _entries_of(tmp_path / "inplace") == _entries_of(tmp_path / "plain")
    assert [p.name.split(".")[0] for p in run_files(tmp_path / "inplace", RUN)] == ["20240701", "20240702"]
