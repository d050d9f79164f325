"""The journal's mapped appender: what is appended is the file, byte for byte, across extents and
through the ``pwrite`` path; pages are faulted in ahead; a worker killed while appending leaves
whole entries then zeros, which the reader cuts (issue 9, item 1: the journal's cost)."""

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
