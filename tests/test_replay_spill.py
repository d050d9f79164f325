"""`streamctl replay --out` in bounded memory: spilled sorted runs, merged, byte for byte as the in-memory sort."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _common import wait_until
from _data import sample

from streamctl.cli.replaying import _order, write_rows
from streamctl.cli.spill import RUN_ROWS_ENV, SortedSpill

pytestmark = pytest.mark.timeout(600)

MBP1 = sample("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
MBO = sample("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst")
_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_replay_memory.py"


def _build_tape(path: Path, records: int) -> int:
    """The benchmark's tape: the MBP-1 sample repeated, each copy shifted forward in time."""
    spec = importlib.util.spec_from_file_location("bench_replay_memory", _BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(_BENCH.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_BENCH.parent))
    return module.build_tape(path, records)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"), TMPDIR=str(tmp), **extra)


def _replay(tmp_path: Path, source: Path, out: Path, **env: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(source), "--out", str(out)],
                          env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _spill_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("streamctl-spill-*"))


def _in_memory(rows: list[dict], out: Path, row_group_size: int | None = None) -> None:
    """What `write_rows` did before it streamed: sort everything, then write it in one go."""
    rows = sorted(rows, key=_order)
    if out.suffix == ".parquet":
        columns: dict[str, list] = {}
        for row in rows:
            for name in row:
                columns.setdefault(name, [])
        for row in rows:
            for name, values in columns.items():
                values.append(row.get(name))
        pq.write_table(pa.table(columns), out, row_group_size=row_group_size)
    else:
        out.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("source", [MBP1, MBO], ids=["mbp-1", "mbo"])
def test_tiny_runs_give_the_same_bytes(tmp_path, source):
    """Runs of 7 rows (dozens of run files, merged level by level) change nothing in the output."""
    for suffix in (".jsonl", ".parquet"):
        whole, spilled = tmp_path / f"whole{suffix}", tmp_path / f"spilled{suffix}"
        _replay(tmp_path, source, whole)
        _replay(tmp_path, source, spilled, **{RUN_ROWS_ENV: "7"})
        assert spilled.read_bytes() == whole.read_bytes()
    assert not _spill_folders(tmp_path)


def test_spill_and_streamed_writers_equal_the_in_memory_sort(tmp_path):
    """Real rows in a shuffled arrival order with repeated keys: the same order, the same bytes."""
    reference = tmp_path / "ref.jsonl"
    _replay(tmp_path, MBP1, reference)
    rows = [json.loads(line) for line in reference.read_text().splitlines()]
    rng = random.Random(7)
    arrivals = [dict(row, copy=i) for i in range(2) for row in rows[:1500]]  # equal keys: arrival order decides
    rng.shuffle(arrivals)
    with SortedSpill(_order, run_rows=5, fan_in=3) as spill:
        for row in arrivals:
            spill.add(row)
        assert spill.spilled_runs > len(arrivals) // 5 and spill.folder is not None
        assert list(spill) == sorted(arrivals, key=_order)
        for name, group in (("a.jsonl", None), ("a.parquet", None), ("b.parquet", 100)):
            ours, theirs = tmp_path / f"ours-{name}", tmp_path / f"theirs-{name}"
            write_rows(spill, str(ours), **({"row_group_size": group} if group else {}))
            _in_memory(arrivals, theirs, group)
            assert ours.read_bytes() == theirs.read_bytes(), name
        folder = spill.folder
    assert not folder.exists()
    assert pq.ParquetFile(tmp_path / "ours-b.parquet").metadata.num_row_groups == -(-len(arrivals) // 100)


def test_run_files_go_when_the_block_raises(tmp_path):
    folder = None
    with pytest.raises(ZeroDivisionError), SortedSpill(_order, run_rows=3) as spill:
        for seq in range(10):
            spill.add({"topic": "trade.X", "seq": seq, "ts_event": 10 - seq})
        folder = spill.folder
        assert folder is not None and len(list(folder.iterdir())) == 3
        _ = 1 / 0
    assert folder is not None and not folder.exists()


def test_replay_killed_midway_leaves_no_run_files_and_no_output(tmp_path):
    """SIGTERM while the recorder has spilled: the plant stops, the run files go, nothing is written."""
    tape = tmp_path / "tape.dbn.zst"
    _build_tape(tape, 200_000)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "replay", str(tape), "--out", str(out)],
                            env=_env(tmp_path, **{RUN_ROWS_ENV: "5"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(f.iterdir() for f in _spill_folders(tmp_path)), 180, "a spilled run")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode != 0 and "SIGTERM" in err, err[-2000:]
    assert not _spill_folders(tmp_path)
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.partial-*"))
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"stc_replay-{proc.pid}")]


_PEAK = ("import atexit, resource, sys; "
         "atexit.register(lambda: print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
         "from streamctl.cli.main import cli; sys.argv[0] = 'streamctl'; cli()")


def _peak_mb(tmp_path: Path, tape: Path, out: Path) -> float:
    """Peak RSS of the replay command's own process (the recorder and the writer live there)."""
    proc = subprocess.run([sys.executable, "-c", _PEAK, "replay", str(tape), "--out", str(out)],
                          env=_env(tmp_path, **{RUN_ROWS_ENV: "2000"}), capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kb = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("peak_kb ")]
    return int(kb[-1]) / 1024


@pytest.mark.parametrize("suffix", [".jsonl"])
def test_replay_memory_does_not_grow_with_the_input(tmp_path, suffix):
    """30 times the input: the replay process's peak grows by a few MB, not by what it recorded.

    Kept in memory, the ~140,000 extra messages of the big tape cost well over 100 MB.
    """
    small, big = tmp_path / "small.dbn.zst", tmp_path / "big.dbn.zst"
    _build_tape(small, 4_600)
    n = _build_tape(big, 30 * 4_600)
    base = _peak_mb(tmp_path, small, tmp_path / f"small{suffix}")
    peak = _peak_mb(tmp_path, big, tmp_path / f"big{suffix}")
    lines = (tmp_path / f"big{suffix}").read_text().splitlines()
    quotes = sum(line.startswith('{"topic": "quote.') for line in lines)
    assert quotes == n  # every MBP-1 record's quote: the recorder missed nothing
    assert peak - base < 40, (base, peak, len(lines))


def _publisher(endpoint: str):
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.linger = 1000
    sock.bind(endpoint)
    return context, sock


def _trades(symbol: str, seqs: list[int], ts: list[int]) -> bytes:
    import msgspec

    from streamctl.bus import wire

    return msgspec.msgpack.encode([
        wire.Trade(seq=seq, src="worker-0", symbol=symbol, ts_event=t, ts_recv=t, price=1.5, size=2.0, side="B")
        for seq, t in zip(seqs, ts, strict=True)])


def _recorded(tmp_path: Path, messages: list[tuple[str, bytes]]):
    """A `Recorder` fed `messages` by a real PUB socket, then a ``stopped`` event; sorted."""
    import msgspec

    from streamctl.bus import wire
    from streamctl.cli.replaying import Recorder

    endpoint = f"ipc://{tmp_path}/rec.sock"
    context, sock = _publisher(endpoint)
    recorder = Recorder(endpoint)
    try:
        recorder.start()

        def event(kind: str) -> None:
            sock.send_multipart([wire.topic_frame("event.supervisor"), msgspec.msgpack.encode(
                wire.Event(seq=1, src="supervisor", source="worker-0", kind=kind, message="", ts=0))])

        def probe() -> bool:
            event("probe")
            return recorder.synced.wait(0.05)

        wait_until(probe, 30, "the recorder's subscription")
        for topic, data in messages:
            sock.send_multipart([wire.topic_frame(topic), data])
        event("stopped")
        assert recorder.wait_workers({"worker-0"}, 30)
        return recorder, [dict(row) for row in recorder.sort()]
    finally:
        sock.close()
        context.term()
        recorder.discard()


def test_recorder_sorts_what_it_received_and_counts_gaps(tmp_path):
    """Real PUB -> recorder: rows come out sorted by (ts_event, topic, seq); a seq gap inside a
    batch or between batches is counted (run_replay then writes nothing)."""
    whole = [("trade.B", _trades("B", [1, 2], [30, 10])), ("trade.A", _trades("A", [1], [10])),
             ("trade.B", _trades("B", [3], [20]))]
    recorder, rows = _recorded(tmp_path, whole)
    assert recorder.lost == 0
    assert [(r["topic"], r["seq"]) for r in rows] == [("trade.A", 1), ("trade.B", 2), ("trade.B", 3), ("trade.B", 1)]
    assert rows[0] == {"topic": "trade.A", "seq": 1, "src": "worker-0", "symbol": "A", "ts_event": 10, "ts_recv": 10,
                       "price": 1.5, "size": 2.0, "side": "B"}
    gaps = [("trade.B", _trades("B", [1, 3], [1, 2])), ("trade.B", _trades("B", [6], [3]))]
    recorder, rows = _recorded(tmp_path, gaps)
    assert recorder.lost == 1 + 2 and len(rows) == 3


def test_recorder_that_cannot_write_fails_the_replay(tmp_path):
    """A spool write that fails (a full disk: /dev/full) stops the recorder and `sort` says why,
    rather than the replay writing what little it had."""
    import msgspec

    from streamctl.bus import wire
    from streamctl.cli.replaying import Recorder

    endpoint = f"ipc://{tmp_path}/rec.sock"
    context, sock = _publisher(endpoint)
    recorder = Recorder(endpoint)
    recorder._spool.close()
    recorder._spool = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - the recorder closes it
    try:
        recorder.start()

        def probe() -> bool:
            sock.send_multipart([wire.topic_frame("event.supervisor"), msgspec.msgpack.encode(
                wire.Event(seq=1, src="supervisor", source="supervisor", kind="probe", message="", ts=0))])
            return recorder.synced.wait(0.05)

        wait_until(probe, 30, "the recorder's subscription")
        sock.send_multipart([wire.topic_frame("trade.A"), _trades("A", [1], [10])])
        wait_until(lambda: not recorder._thread.is_alive(), 30, "the recorder to stop on the write error")
        with pytest.raises(RuntimeError, match="the recorder failed: .*No space left on device"):
            recorder.sort()
    finally:
        sock.close()
        context.term()
        recorder.discard()
