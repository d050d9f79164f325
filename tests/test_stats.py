"""Process table: slot layout, typed writes, and a slot written from another process."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from _common import wait_until
from _shmutil import no_leaks, unique_plant

from streamctl.shm.segments import segment_name
from streamctl.shm.stats import COUNTERS, SLOT_DTYPE, SUPERVISOR_FIELDS, ProcessTable, Role, State, StatsError


@pytest.fixture
def table():
    with no_leaks(unique_plant("stats")) as plant:
        tab = ProcessTable.create(segment_name(plant, "stats"), 4, plant=plant)
        try:
            yield tab
        finally:
            tab.close()
            tab.unlink()


def test_slot_layout_is_8_byte_aligned_and_padded_to_cache_lines():
    assert SLOT_DTYPE.itemsize % 64 == 0
    for name in SLOT_DTYPE.names:
        dt, offset = SLOT_DTYPE.fields[name][:2]
        assert offset % 8 == 0, name
        if dt.kind != "S":
            assert dt.base.itemsize == 8, name
    for name in (*COUNTERS, *SUPERVISOR_FIELDS, "pid", "cpu", "state", "heartbeat_ns", "detail", "uss"):
        assert name in SLOT_DTYPE.names


def test_set_add_get_and_snapshot(table):
    slot = table.slot(2)
    assert table.slot(2) is slot
    slot.set("name", "feed[sim]")
    slot.set("role", "ingest")
    slot.set("pid", 1234)
    slot.set("cpu", -1)
    slot.set("state", State.READY)
    slot.add("records_in", 10)
    slot.add("records_in")
    slot.set("progress_total", 2.5)
    slot.heartbeat()
    assert slot.get("state") is State.READY and slot.get("records_in") == 11 and slot.get("cpu") == -1
    assert slot.get("name") == "feed[sim]"
    (row,) = table.snapshot()
    assert row["slot"] == 2 and row["name"] == "feed[sim]" and row["role"] == "ingest"
    assert row["state"] is State.READY and row["state"].name == "READY" and row["records_in"] == 11 and row["progress_total"] == 2.5
    assert abs(row["heartbeat_ns"] - time.time_ns()) < 60e9
    assert len(table.snapshot(include_empty=True)) == 4
    slot.clear()
    assert table.snapshot() == []


def test_bad_fields_and_values_are_refused(table):
    slot = table.slot(0)
    with pytest.raises(StatsError, match=r"`field` must be a numeric slot field, was `bogus`"):
        slot.add("bogus")
    with pytest.raises(StatsError, match=r"`name` must be at most 32 UTF-8 bytes, was `x{33}`"):
        slot.set("name", "x" * 33)
    with pytest.raises(StatsError, match=r"`pid` must be a number in range, was `'abc'`"):
        slot.set("pid", "abc")
    with pytest.raises(StatsError, match=r"`slot` must be in 0\.\.3, was 4"):
        table.slot(4)


@pytest.mark.parametrize("role", list(Role))
def test_a_role_is_stored_and_read_back_as_the_enum(table, role):
    slot = table.slot(3)
    slot.set("name", "p")
    slot.set("role", role.value)
    assert slot.get("role") is role and table.snapshot()[0]["role"] is role


@pytest.mark.parametrize("role", ["feed", "proxy", "Worker", ""])
def test_an_unknown_role_is_refused(table, role):
    with pytest.raises(StatsError, match=rf"`role` must be one of hub, worker, ingest, sink, was `{role}`"):
        table.slot(0).set("role", role)
    assert table.slot(0).get("role") == ""


def test_detail_is_cut_to_fit_on_a_character_boundary(table):
    slot = table.slot(1)
    slot.set("detail", "é" * 100)  # 200 bytes, one word: cut where it must be, and marked
    assert slot.get("detail") == "é" * 62 + "…"  # 124 + 3 bytes of the 128


def test_detail_is_cut_at_a_word_with_an_ellipsis(table):
    slot = table.slot(1)
    words = " ".join(f"word{i:03d}" for i in range(40))  # 319 bytes
    slot.set("detail", words)
    detail = slot.get("detail")
    assert detail.endswith("…") and len(detail.encode()) <= 128
    kept = detail.removesuffix("…")
    assert words.startswith(kept + " ") and kept.split()[-1] == "word014"  # whole words only
    slot.set("detail", "short enough")
    assert slot.get("detail") == "short enough"  # text that fits is left alone


def test_detail_escapes_control_characters(table):
    slot = table.slot(1)
    slot.set("detail", "refused: \x1b]0;owned\x07\x1b[2Jbye\nnext")
    assert slot.get("detail") == "refused: \\x1b]0;owned\\x07\\x1b[2Jbye\\nnext"


def _child(name: str, index: int, n: int) -> None:
    tab = ProcessTable.attach(name)
    slot = tab.slot(index)
    slot.set("state", State.READY)
    for _ in range(n):
        slot.add("records_in")
        slot.heartbeat()
    slot.set("detail", "done")
    slot.set("state", State.EXITED)
    tab.close()


def test_process_writes_its_slot_while_the_supervisor_writes_its_columns(table):
    """Two writers on one slot, different fields: no update is lost on either side."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_child, args=(table.name, 1, 50_000))
    slot = table.slot(1)
    slot.set("name", "worker[0]")
    proc.start()
    try:
        wait_until(lambda: slot.get("state") != State.EMPTY, 60, "child READY")
        writes = 0
        deadline = time.monotonic() + 60
        while slot.get("state") is not State.EXITED:
            writes += 1
            slot.set("rate_in", float(writes))  # supervisor column, same cache lines
            slot.set("rss", writes)
            assert time.monotonic() < deadline, "child never finished"
        proc.join(30)
        assert proc.exitcode == 0
        assert slot.get("records_in") == 50_000
        assert slot.get("rate_in") == float(writes) and slot.get("rss") == writes
        assert slot.get("detail") == "done" and slot.get("name") == "worker[0]"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def test_array_field_is_a_writable_view_of_the_slot(table):
    slot = table.slot(1)
    slot.set("name", "worker-0")
    slot.array("latency_counts")[[0, -1]] += 3
    (row,) = table.snapshot()
    assert row["latency_counts"][0] == row["latency_counts"][-1] == 3 and sum(row["latency_counts"]) == 6
    with pytest.raises(StatsError, match="`field` must be an array slot field"):
        slot.array("records_in")
