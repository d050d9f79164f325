"""Checkpoints (issue 9, item 2): a `CalculatorSet` restored from a checkpoint file, then fed the
same batches, clock closes and flush, publishes exactly what the original does; a file that is
cut, corrupt, of another format or config is skipped for the one before it; old ones are pruned.

The property runs every calculator kind at once: time bars with empty bars and late trades,
tick/volume/dollar bars, session and rolling VWAP, SMA, EMA, the z-score, jump and IQR rules,
crossed/locked quotes, vendor corrections and cancels, and level books fed as MBO/MBP feeds feed
them (events spanning several records closed by ``F_LAST``, resets, removals of missing levels).
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import (
    AnomalyConfig,
    BarsConfig,
    BookConfig,
    CalculatorsConfig,
    IQRConfig,
    VwapConfig,
    ZScoreConfig,
)
from streamctl.process.journal.checkpoints import (
    CheckpointError,
    checkpoints,
    newest_checkpoint,
    prune,
    read_checkpoint,
    write_checkpoint,
)
from streamctl.process.journal.files import entry_header, resumes_at
from streamctl.shm.records import RECORD_DTYPE, Flag, Kind, Side

CONFIG = CalculatorsConfig(
    bars=BarsConfig(time=["1s", "5s"], ticks=[3], volume=[50.0], dollar=[5000.0], emit_empty=True, max_empty_bars=4,
                    correction_window=64, close_delay=0.1),
    vwap=VwapConfig(rolling_window=4), sma=[2, 5], ema=[3],
    anomalies=AnomalyConfig(zscore=ZScoreConfig(window=4, threshold=1.0), jump_pct=2.0, iqr=IQRConfig(window=4, k=0.5)),
    book=BookConfig(depth=3))
T0 = 1_704_205_800_000_000_000
SEC = 1_000_000_000

_record = st.tuples(
    st.sampled_from([Kind.TRADE] * 5 + [Kind.QUOTE, Kind.BOOK, Kind.BOOK, Kind.BOOK, Kind.RESET, Kind.CORRECTION,
                                         Kind.CANCEL]),
    st.integers(0, 19),  # local symbol
    st.integers(-800, 2500),  # ms since the previous record (negative: late)
    st.integers(95, 105),  # price in whole units: few levels, so books and rules collide
    st.sampled_from([0.0, 1.0, 2.0, 7.5, 40.0]),
    st.sampled_from([Side.BID, Side.ASK]),
    st.booleans(),  # F_LAST (book) / crossed (quote)
    st.integers(1, 12),  # sequence a correction or cancel names
)


def _batch(rows: list[tuple], t: int, seq: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    records = np.zeros(len(rows), dtype=RECORD_DTYPE)
    sym = np.zeros(len(rows), dtype=np.int32)
    for i, (kind, s, dt_ms, price, size, side, flag, names) in enumerate(rows):
        t += dt_ms * 1_000_000
        seq += 1
        rec = records[i]
        rec["kind"], rec["ts_event"], rec["ts_recv"] = kind, t, t + 5_000
        rec["price"], rec["size"], rec["sequence"] = price * SEC, size, seq
        if kind == Kind.QUOTE:
            rec["price2"] = (price - 1 if flag else price + 1) * SEC
            rec["size2"] = size + 1
        elif kind == Kind.BOOK:
            rec["side"], rec["flags"] = side, Flag.LAST if flag else 0
        elif kind in (Kind.CORRECTION, Kind.CANCEL):
            rec["sequence"], rec["price2"] = names, seq + 1000
            rec["size"] = size or 1.0
        sym[i] = s
    return records, sym, t, seq


_ops = st.lists(st.one_of(st.tuples(st.just("batch"), st.lists(_record, min_size=1, max_size=40)),
                          st.tuples(st.just("clock"), st.integers(0, 3000))), min_size=2, max_size=14)


def _encoded(outputs) -> list[tuple[str, bytes]]:
    return [(topic, msgspec.msgpack.encode(payload)) for topic, payload in outputs]


def _run(calc: CalculatorSet, ops: list, t: int, seq: int) -> tuple[list, int, int]:
    out = []
    for op, arg in ops:
        if op == "batch":
            records, sym, t, seq = _batch(arg, t, seq)
            out += _encoded(calc.on_batch(records, sym))
        else:
            out += _encoded(calc.on_clock(t - arg * 1_000_000))
    return out, t, seq


def _restored(calc: CalculatorSet, tmp_path, spare: dict | None = None) -> CalculatorSet:
    """`calc`'s state (copied into the arrays of an earlier export `spare`, as a worker's next
    checkpoint reuses its last one's) through a checkpoint file into a new set."""
    path = write_checkpoint(tmp_path, run=1, day=0, offset=64, state={"calc": calc.export_state(spare)})
    again = CalculatorSet(CONFIG, src="test", live=True)
    again.load_state(read_checkpoint(path)["calc"])
    path.unlink()
    return again


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, cut=st.integers(0, 14), late_symbols=st.integers(0, 3))
def test_a_set_restored_from_a_checkpoint_publishes_what_the_original_does(tmp_path, ops, cut, late_symbols):
    original = CalculatorSet(CONFIG, src="test", live=True)
    for s in range(20):
        original.add_symbol(f"S{s:02d}")
    spare = original.export_state()  # an earlier checkpoint's arrays, overwritten by the next
    before, t, seq = _run(original, ops[:cut], T0, 0)
    restored = _restored(original, tmp_path, spare)
    assert restored.symbols == original.symbols and restored.counters == original.counters
    for calc in (original, restored):  # symbols learned after the checkpoint
        for s in range(late_symbols):
            calc.add_symbol(f"LATE{s}")
    after = [_run(calc, ops[cut:], t, seq)[0] + _encoded(calc.flush()) for calc in (original, restored)]
    assert after[0] == after[1]
    assert original.counters == restored.counters


def test_a_grown_book_and_the_revision_ring_survive_a_checkpoint(tmp_path):
    """200 levels a side (the level capacity has doubled twice), corrections against the ring."""
    calc = CalculatorSet(CONFIG, src="test", live=True)
    calc.add_symbol("ESM4")
    levels = [(Kind.BOOK, 0, 1, 100 + i, 1.0 + i, side, True, 0) for i in range(200) for side in (Side.BID, Side.ASK)]
    trades = [(Kind.TRADE, 0, 300, 100 + i % 5, 3.0, Side.BID, False, 0) for i in range(10)]
    records, sym, t, seq = _batch(levels + trades, T0, 0)
    calc.on_batch(records, sym)
    restored = _restored(calc, tmp_path)
    fix = [(Kind.CORRECTION, 0, 0, 101, 9.0, Side.BID, False, 405), (Kind.CANCEL, 0, 0, 0, 1.0, Side.BID, False, 407),
           (Kind.BOOK, 0, 1, 150, 0.0, Side.BID, True, 0), (Kind.TRADE, 0, 2000, 99, 1.0, Side.BID, False, 0)]
    outputs = []
    for c in (calc, restored):
        records, sym, _, _ = _batch(fix, t, seq)
        outputs.append(_encoded(c.on_batch(records, sym)) + _encoded(c.on_clock(t + 10 * SEC)) + _encoded(c.flush()))
    assert outputs[0] == outputs[1]
    assert any(topic.startswith("book.") for topic, _ in outputs[0])
    assert calc.counters["corrections"] == 2 and restored.counters["corrections"] == 2


def test_a_state_loads_only_into_a_new_set_of_the_same_shape():
    calc = CalculatorSet(CONFIG, src="test", live=True)
    calc.add_symbol("A")
    state = calc.export_state()
    with pytest.raises(ValueError, match="only into a new CalculatorSet; this one has 1 symbols"):
        calc.load_state(state)
    no_book = CalculatorSet(msgspec.structs.replace(CONFIG, book=None), src="test", live=True)
    with pytest.raises(ValueError, match="`book` does not match"):
        no_book.load_state(state)
    other = CalculatorSet(msgspec.structs.replace(CONFIG, ema=[3, 9]), src="test", live=True)
    with pytest.raises(ValueError, match=r"state array `ema` must have trailing axes \(2,\); was \(1,\)"):
        other.load_state(state)


# ---------------------------------------------------------------- files


def _write(tmp_path, offset: int, run: int = 7, **state) -> object:
    return write_checkpoint(tmp_path, run=run, day=19_000, offset=offset,
                            state={"fingerprint": "f", "x": np.arange(offset, dtype=np.int64), **state})


def test_a_checkpoint_reads_back_as_written(tmp_path):
    path = _write(tmp_path, 128, nested={"a": [1, None, "s"], "b": np.zeros((2, 3), np.float32)})
    state = read_checkpoint(path)
    assert state["x"].tolist() == list(range(128)) and state["nested"]["a"] == [1, None, "s"]
    assert state["nested"]["b"].dtype == np.float32 and state["nested"]["b"].shape == (2, 3)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-1], "holds .* bytes of a"),
    (lambda raw: raw[:20], "shorter than a checkpoint header"),
    (lambda raw: raw[:40] + bytes([raw[40] ^ 1]) + raw[41:], "fails its CRC-32"),
    (lambda raw: b"NOTACKPT" + raw[8:], "not a streamctl checkpoint"),
    (lambda raw: raw[:8] + (99).to_bytes(4, "little") + raw[12:], "is checkpoint format 99; this streamctl reads 1"),
])
def test_a_damaged_or_foreign_checkpoint_is_refused_and_the_one_before_is_used(tmp_path, caplog, damage, message):
    _write(tmp_path, 64)
    newest = _write(tmp_path, 192)
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(newest)
    checkpoint, state = newest_checkpoint(tmp_path, 7, fingerprint="f")
    assert checkpoint.offset == 64 and len(state["x"]) == 64
    assert "skipping checkpoint" in caplog.text
    newest.unlink()
    (tmp_path / "7.19000.64.ckpt").write_bytes(b"")
    assert newest_checkpoint(tmp_path, 7, fingerprint="f") is None


def test_a_checkpoint_of_another_config_or_run_is_not_used(tmp_path, caplog):
    _write(tmp_path, 64)
    _write(tmp_path, 128, fingerprint="another config")
    _write(tmp_path, 256, run=8)
    checkpoint, _ = newest_checkpoint(tmp_path, 7, fingerprint="f")
    assert checkpoint.offset == 64
    assert "written for another config" in caplog.text


def test_prune_keeps_the_newest_of_the_run_and_drops_other_runs_and_unfinished_files(tmp_path):
    for offset in (64, 128, 192, 1024):
        _write(tmp_path, offset)
    _write(tmp_path, 64, run=3)
    (tmp_path / ".7.19000.2048.ckpt.tmp").write_bytes(b"cut")
    prune(tmp_path, 7, keep=2)
    assert [c.offset for c in checkpoints(tmp_path, 7)] == [192, 1024]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.19000.1024.ckpt", "7.19000.192.ckpt"]


def test_a_journal_resumes_only_at_an_entry_boundary(tmp_path):
    path = tmp_path / "j.jnl"
    records = np.ones(2, dtype=RECORD_DTYPE)
    entry = entry_header(1, 0, 2, 128, 0, 0, 0) + records.tobytes()
    path.write_bytes(bytes(64) + entry + entry[:100])  # a cut second entry
    assert resumes_at(path, 64) and resumes_at(path, 256)  # an entry; the cut tail
    assert not resumes_at(path, 128) and not resumes_at(path, 100) and not resumes_at(path, 1024)
    path.write_bytes(bytes(64) + entry + bytes(128))  # a mapped file's zero tail
    assert resumes_at(path, 256)

