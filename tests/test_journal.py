"""The journal's files: what is written is read back byte for byte, a torn tail is cut at the
last whole entry, files roll per event-time day and expire, syncs follow the policy, and the
``journal:`` config is checked at load (issue 9, item 1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from streamctl.cli.config import ConfigError, data_dir, parse_config
from streamctl.process.journal.files import (
    CLOCK,
    FLUSH,
    LINE,
    RECORDS,
    SYMBOL,
    FileHeader,
    JournalError,
    read_entries,
    run_files,
)
from streamctl.process.journal.settings import JournalConfig
from streamctl.process.journal.writer import JournalWriter, PublishedMark
from streamctl.shm.records import RECORD_DTYPE, Kind

RUN = 1_700_000_000_000_000_000
DAY_NS = 86_400 * 10**9
DAY = 19_905  # 2024-07-01
NONE = JournalConfig(sync="none")


def _batch(n: int, day: int = DAY, start: int = 0) -> np.ndarray:
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["ts_event"] = day * DAY_NS + np.arange(start, start + n) * 1_000_000
    records["ts_recv"] = records["ts_event"] + 5
    records["price"] = 5_000_000_000_000 + np.arange(n)
    records["size"] = 1.5
    records["instrument_id"] = 42
    records["kind"] = Kind.TRADE
    return records


def _entries(directory: Path, *, repair: bool = False, partition: int = 3):
    return [e for path in run_files(directory, RUN) for e in read_entries(path, partition=partition, repair=repair)]


def _write_sample(directory: Path) -> tuple[JournalWriter, list[np.ndarray]]:
    writer = JournalWriter(directory, partition=3, run=RUN, config=NONE)
    batches = [_batch(5), _batch(4096, start=5), _batch(1, start=4101)]
    writer.append_symbol(1, 42, "ESU4", 0)
    writer.append_records(1, 100, batches[0], 0)
    writer.append_records(1, 105, batches[1], 7)
    writer.append_clock(np.array([DAY * DAY_NS + 3, -1], dtype=np.int64), 20)
    writer.append_records(0, 0, batches[2], 21)
    writer.append_flush(25)
    return writer, batches


def test_what_is_written_is_read_back_in_order(tmp_path):
    writer, batches = _write_sample(tmp_path)
    writer.close()
    entries = _entries(tmp_path)
    assert [(e.kind, e.ring, e.position, e.messages_before) for e in entries] == [
        (SYMBOL, 1, 0, 0), (RECORDS, 1, 100, 0), (RECORDS, 1, 105, 7), (CLOCK, 0, 0, 20), (RECORDS, 0, 0, 21),
        (FLUSH, 0, 0, 25)]
    assert entries[0].count == 42 and entries[0].symbol == "ESU4"
    for entry, batch in zip([entries[1], entries[2], entries[4]], batches, strict=True):
        assert entry.payload.tobytes() == batch.tobytes()  # the 64-byte records exactly as they were
    assert entries[3].payload.tolist() == [DAY * DAY_NS + 3, -1]
    (path,) = run_files(tmp_path, RUN)
    assert path.name == f"20240701.{RUN}.jnl"
    header = FileHeader.unpack(path.read_bytes()[:LINE], path)
    assert (header.partition, header.day, header.run) == (3, DAY, RUN)
    assert path.stat().st_size == LINE * (1 + 6 + 1) + LINE * (5 + 4096 + 1) + LINE  # headers, records, clock
    assert writer.records == 4102 and writer.bytes == path.stat().st_size - LINE


def test_another_partitions_or_a_foreign_file_is_refused(tmp_path):
    writer, _ = _write_sample(tmp_path)
    writer.close()
    with pytest.raises(JournalError, match="partition 3's journal, not 4's"):
        _entries(tmp_path, partition=4)
    (path,) = run_files(tmp_path, RUN)
    path.write_bytes(b"x" * 200)
    with pytest.raises(JournalError, match="not a streamctl journal"):
        _entries(tmp_path)


@pytest.mark.parametrize("cut", [1, LINE - 1, LINE, LINE + 64 * 100, LINE + 64 * 4096 - 1])
def test_a_torn_tail_is_cut_at_the_last_whole_entry_and_appending_goes_on(tmp_path, cut):
    """A worker killed inside the write of its 4096-record batch left `cut` bytes of it."""
    writer = JournalWriter(tmp_path, partition=3, run=RUN, config=NONE)
    writer.append_records(0, 0, _batch(10), 0)
    writer.close()
    (path,) = run_files(tmp_path, RUN)
    whole = path.stat().st_size
    torn = writer.path
    assert torn == path
    big = _batch(4096, start=10)
    with open(path, "ab") as f:
        from streamctl.process.journal.files import entry_header

        f.write((entry_header(RECORDS, 0, 4096, 4096 * LINE, 10, 3, 0) + big.tobytes())[:cut])
    assert [len(e.payload) for e in _entries(tmp_path)] == [10]  # reading alone leaves the file as it is
    assert path.stat().st_size == whole + cut
    assert [len(e.payload) for e in _entries(tmp_path, repair=True)] == [10]
    assert path.stat().st_size == whole
    resumed = JournalWriter(tmp_path, partition=3, run=RUN, config=NONE)
    resumed.resume(path, DAY)
    resumed.append_records(0, 10, big, 3)
    resumed.close()
    entries = _entries(tmp_path)
    assert [e.position for e in entries] == [0, 10] and entries[1].payload.tobytes() == big.tobytes()


def test_files_roll_per_event_day_but_not_into_a_wild_future(tmp_path):
    writer = JournalWriter(tmp_path, partition=3, run=RUN, config=NONE)
    writer.append_records(0, 0, _batch(3), 0)
    writer.append_records(0, 3, _batch(2, DAY + 1), 0)
    wild = _batch(1, DAY + 1)
    wild["ts_event"] = np.datetime64("2190-01-01", "ns").astype(np.int64)
    writer.append_records(0, 5, wild, 0)  # one record dated 2190 stays in today's file
    writer.append_records(0, 6, _batch(1, DAY + 1, start=9), 0)
    writer.close()
    files = run_files(tmp_path, RUN)
    assert [p.name.split(".")[0] for p in files] == ["20240701", "20240702"]
    counts = [sum(len(e.payload) for e in read_entries(p, partition=3, repair=False)) for p in files]
    assert counts == [3, 4]


def test_days_past_retention_are_deleted_with_the_marks_of_runs_gone(tmp_path):
    old_run = RUN - 1
    old = JournalWriter(tmp_path, partition=3, run=old_run, config=JournalConfig(sync="none", retention_days=30))
    old.append_records(0, 0, _batch(2, DAY - 10), 0)
    old.append_records(0, 2, _batch(2, DAY - 2), 0)
    old.close()
    PublishedMark(tmp_path, old_run)
    assert len(run_files(tmp_path, old_run)) == 2
    writer = JournalWriter(tmp_path, partition=3, run=RUN, config=JournalConfig(sync="none", retention_days=3))
    PublishedMark(tmp_path, RUN)
    writer.append_records(0, 0, _batch(2, DAY), 0)
    writer.close()
    assert [p.name.split(".")[0] for p in run_files(tmp_path, old_run)] == ["20240629"]
    assert sorted(p.name for p in tmp_path.glob("*.sent")) == sorted([f"{old_run}.sent", f"{RUN}.sent"])
    later = JournalWriter(tmp_path, partition=3, run=RUN, config=JournalConfig(sync="none", retention_days=1))
    later.append_records(0, 2, _batch(2, DAY + 1), 0)
    later.close()
    assert run_files(tmp_path, old_run) == [] and [p.name for p in tmp_path.glob("*.sent")] == [f"{RUN}.sent"]


@pytest.mark.parametrize(("policy", "after_appends", "after_tick", "after_close"),
                         [("none", 0, 0, 0), ("batch", 3, 3, 3), ("interval", 0, 1, 1)])
def test_syncs_follow_the_policy(tmp_path, monkeypatch, policy, after_appends, after_tick, after_close):
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    writer = JournalWriter(tmp_path, partition=3, run=RUN, config=JournalConfig(sync=policy, sync_interval=0.001))
    for i in range(3):
        writer.append_records(0, i, _batch(1, start=i), 0)
    assert len(syncs) == after_appends
    # `interval`: due once 1 ms has passed since the writer was made; wait for it, never sleep-and-hope
    import time

    deadline = time.monotonic() + 0.001
    while time.monotonic() < deadline:
        pass
    writer.tick()
    assert len(syncs) == after_tick
    writer.close()
    assert len(syncs) == after_close


def test_the_published_mark_survives_its_process(tmp_path):
    mark = PublishedMark(tmp_path, RUN)
    assert mark.value == 0
    mark.array[0] = 12345
    again = PublishedMark(tmp_path, RUN)
    assert again.value == 12345 and (tmp_path / f"{RUN}.sent").read_bytes() == (12345).to_bytes(8, "little")


CONFIG = "name: plantx\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n"


@pytest.mark.parametrize(("extra", "message"), [
    ("journal: {sync: sometimes}\n", "`journal.sync` invalid enum value 'sometimes'; was sometimes"),
    ("journal: {retention_days: 0}\n", "`journal.retention_days` must be int >= 1; was 0"),
    ("journal: {sync_interval: 0}\n", "`journal.sync_interval` must be float > 0.0; was 0"),
    ("journal: {dir: ' '}\n", "`journal.dir` must be a directory path"),
    ("journal: {size: 3}\n", "`journal.size`"),
    ("journal: {checkpoint_interval: 0}\n", "`journal.checkpoint_interval` must be float > 0.0; was 0"),
    ("journal: {checkpoint_records: 0}\n", "`journal.checkpoint_records` must be int >= 1; was 0"),
    ("journal: {checkpoint_keep: 0}\n", "`journal.checkpoint_keep` must be int >= 1; was 0"),
])
def test_bad_journal_settings_are_refused_naming_the_field(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(CONFIG + extra)


def test_checkpoints_can_be_turned_off():
    journal = parse_config(CONFIG + "journal: {checkpoint_interval: null, checkpoint_records: null}\n").journal
    assert journal.checkpoint_interval is None and journal.checkpoint_records is None


def test_a_journal_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_text("")
    with pytest.raises(ConfigError, match="`journal.dir` must be a directory, not a file"):
        parse_config(CONFIG + f"journal: {{dir: {path}}}\n")


def test_the_data_directory_is_the_users_never_the_working_tree(tmp_path):
    config = parse_config(CONFIG)
    assert config.journal == JournalConfig()
    assert data_dir(config, {"XDG_DATA_HOME": "/x/share"}) == Path("/x/share/streamctl/plantx")
    assert data_dir(config, {}) == Path.home() / ".local/share/streamctl/plantx"
    chosen = parse_config(CONFIG + f"journal: {{dir: {tmp_path}/d, sync: batch}}\n")
    assert data_dir(chosen) == tmp_path / "d" and chosen.journal.sync == "batch"
