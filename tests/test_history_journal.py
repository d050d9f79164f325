"""The output journal's files (`streamctl.bus.history`) on a real directory: reads by seq and by
time across files and runs, a torn tail cut at the next opening, retention by size and by age,
and an index whose size follows the checkpoints, not the messages."""

from __future__ import annotations

import os
import time

import pytest

from streamctl.bus import wire
from streamctl.bus.history import INDEX_EVERY, HistoryConfig, HistoryJournal

SMALL = HistoryConfig(file_bytes=1 << 16, max_bytes=1 << 30)
T0 = time.time_ns()


def _write(journal: HistoryJournal, topics: list[str], count: int, *, start: int = 1, ts: int = T0) -> int:
    """`count` messages on each topic, interleaved, seq from `start`; payload names topic and seq."""
    for i in range(count):
        for topic in topics:
            ts += 1
            journal.append(wire.topic_frame(topic), start + i, start + i, ts, f"{topic}:{start + i}".encode())
    journal.flush()
    return ts


def _payloads(found) -> list[bytes]:
    return [m.payload for m in found]


def test_from_seq_pages_through_files_and_stops_at_a_new_seq_run(tmp_path):
    journal = HistoryJournal(tmp_path, run=1, config=SMALL)
    _write(journal, ["bar.1s.A", "bar.1s.B"], 3000)
    assert len(list(tmp_path.glob("*.1.*.hist"))) > 2  # rolled by size
    got, seq = [], 5
    while True:
        page, complete, more = journal.from_seq(wire.topic_frame("bar.1s.A"), seq, 1000)
        assert complete
        got += page
        if not more:
            break
        seq = page[-1].last + 1
    assert _payloads(got) == [f"bar.1s.A:{i}".encode() for i in range(5, 3001)]
    # the publisher starts over: its new seq run is what `from_seq` answers, the old one is cut off
    _write(journal, ["bar.1s.A"], 10, ts=journal.last_ts)
    page, complete, more = journal.from_seq(wire.topic_frame("bar.1s.A"), 1, 1000)
    assert complete and not more and [m.first for m in page] == list(range(1, 11))
    page, complete, _ = journal.from_seq(wire.topic_frame("bar.1s.B"), 2999, 1000)
    assert complete and [m.first for m in page] == [2999, 3000]
    journal.close()


def test_since_reads_in_arrival_order_across_runs_and_pages(tmp_path):
    first = HistoryJournal(tmp_path, run=1, config=SMALL)
    end = _write(first, ["trade.A", "vwap.A"], 1500)
    first.close()
    second = HistoryJournal(tmp_path, run=2, config=SMALL)
    assert second.last_ts == end
    _write(second, ["trade.A"], 500, ts=end)
    found, cursor = [], T0
    while cursor is not None:
        page, cursor = second.since(b"trade.", cursor, 700)
        found += page
    assert _payloads(found) == [f"trade.A:{i}".encode() for i in (*range(1, 1501), *range(1, 501))]
    assert [m.ts for m in found] == sorted(m.ts for m in found)
    # from_seq is per run: the second run's seq 1..500 only
    page, complete, _ = second.from_seq(wire.topic_frame("trade.A"), 1, 10_000)
    assert complete and len(page) == 500
    second.close()


def test_a_torn_tail_is_cut_at_the_next_opening_and_the_run_goes_on(tmp_path):
    journal = HistoryJournal(tmp_path, run=7, config=SMALL)
    _write(journal, ["bar.1s.A"], 100)
    journal.close()
    path = max(tmp_path.glob("*.hist"))
    whole = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(b"HREC" + b"\x00" * 30)  # a record's first bytes: the hub was killed mid-write
    reopened = HistoryJournal(tmp_path, run=7, config=SMALL)
    assert reopened.cut == [(path, 34)] and path.stat().st_size == whole
    _write(reopened, ["bar.1s.A"], 50, start=101, ts=reopened.last_ts)  # the same run, a restarted hub
    page, complete, more = reopened.from_seq(wire.topic_frame("bar.1s.A"), 1, 1000)
    assert complete and not more and [m.first for m in page] == list(range(1, 151))
    reopened.close()


def test_a_closed_file_s_sidecar_index_replaces_the_scan_and_a_stale_one_is_ignored(tmp_path):
    journal = HistoryJournal(tmp_path, run=3, config=SMALL)
    _write(journal, ["bar.1s.A", "vwap.A"], 2000)
    journal.close()
    files, sides = sorted(tmp_path.glob("*.hist")), sorted(tmp_path.glob("*.hist.idx"))
    assert len(files) > 2 and [s.name for s in sides] == [f.name + ".idx" for f in files]
    expected = journal.from_seq(wire.topic_frame("vwap.A"), 1, 5000)
    again = HistoryJournal(tmp_path, run=3, config=SMALL)
    assert again.from_seq(wire.topic_frame("vwap.A"), 1, 5000) == expected and again.index_size() == journal.index_size()
    again.close()
    with files[-1].open("ab") as fh:  # the file grew after its sidecar: the sidecar no longer fits
        fh.write(b"\x00" * 10)
    rescanned = HistoryJournal(tmp_path, run=3, config=SMALL)
    assert rescanned.cut == [(files[-1], 10)]
    assert rescanned.from_seq(wire.topic_frame("vwap.A"), 1, 5000) == expected
    rescanned.close()


def test_retention_deletes_the_oldest_files_by_size_and_age(tmp_path):
    journal = HistoryJournal(tmp_path, run=1, config=HistoryConfig(file_bytes=1 << 16, max_bytes=1 << 18))
    _write(journal, ["bar.1s.A"], 20_000)
    total = sum(p.stat().st_size for p in tmp_path.glob("*.hist"))
    assert journal.deleted and total <= (1 << 18) + (1 << 16)
    page, complete, _ = journal.from_seq(wire.topic_frame("bar.1s.A"), 1, 100)
    assert not complete and page[0].first > 1  # the oldest are gone, what is left starts later
    journal.close()
    old = HistoryJournal(tmp_path / "old", run=1, config=SMALL)
    _write(old, ["bar.1s.A"], 10, ts=T0 - 9 * 86_400 * 10**9)  # nine days ago
    old.close()
    assert len(list((tmp_path / "old").glob("*.hist"))) == 1
    fresh = HistoryJournal(tmp_path / "old", run=2, config=SMALL)  # retention_days 7
    assert len(fresh.deleted) == 1 and not list((tmp_path / "old").glob("*.hist*"))
    fresh.close()


@pytest.mark.parametrize("count", [2_000, 20_000])
def test_the_index_holds_a_checkpoint_per_index_every_messages(tmp_path, count):
    journal = HistoryJournal(tmp_path, run=1, config=HistoryConfig(file_bytes=1 << 24))
    _write(journal, ["bar.1s.A", "bar.1s.B", "vwap.A", "vwap.B"], count)
    per_topic, per_file = journal.index_size()
    files = len(list(tmp_path.glob("*.hist")))
    assert per_topic == 4 * -(-count // INDEX_EVERY)
    assert per_file <= 4 * count // INDEX_EVERY + files
    journal.close()
    assert os.listdir(tmp_path)


def test_appending_many_at_once_writes_what_appending_one_by_one_does(tmp_path):
    """The service hands a take over at once: the records, back links, rolls (mid-batch here) and
    indexes are those of one append per message."""
    messages = [(wire.topic_frame(f"bar.1s.S{i % 3}"), i // 3 + 1, i // 3 + 1, T0 + i, os.urandom(i % 200))
                for i in range(3000)]
    one, many = HistoryJournal(tmp_path / "one", run=1, config=SMALL), HistoryJournal(tmp_path / "many", run=1,
                                                                                        config=SMALL)
    for message in messages:
        one.append(*message)
    for k in range(0, len(messages), 700):
        many.append_many(messages[k:k + 700])
    one.close()
    many.close()
    files = [sorted((tmp_path / name).glob("*.hist")) for name in ("one", "many")]
    assert len(files[0]) > 2 and [p.name for p in files[0]] == [p.name for p in files[1]]
    header = 32  # magic, version, number, run, then the opening time, which differs
    for a, b in zip(*files, strict=True):
        assert a.read_bytes()[header:] == b.read_bytes()[header:]
    again = HistoryJournal(tmp_path / "many", run=1, config=SMALL)
    assert [(m.frame, m.first, m.ts, m.payload) for m in again.since(b"", 0, 10_000)[0]] == \
        [(f, s, t, p) for f, s, _, t, p in messages]
    assert one.index_size() == many.index_size()
