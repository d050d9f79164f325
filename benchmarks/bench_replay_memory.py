"""Peak resident memory and wall time of ``streamctl replay --out`` on a multi-million-record tape.

The tape is the ESU4 MBP-1 sample in ``tests/data`` (2,288 records over four minutes) written
N times into one ``.dbn.zst`` after its metadata header, each copy shifted forward by a whole
number of minutes (``ts_event`` and ``ts_recv``), so time only moves on and every copy makes
its own bars. ``streamctl replay`` runs as a separate command with the default calculators
(those of ``configs/demo.yaml``: raw trades and quotes on) under ``/usr/bin/time -v``, while this
script polls the whole process tree with psutil (the command, its forkserver, hub, feed and
worker). Printed: the largest single process (``time -v``'s maximum resident set size, or the
polled figure without ``/usr/bin/time``), the polled peak of the tree's summed RSS (shared pages
such as the rings count once per process, so an upper bound) and the wall time.

    python benchmarks/bench_replay_memory.py [--quick] [--records N] [--format jsonl|parquet]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _table import bench_main

from streamctl.ingest.formats.dbn.decoder import read_file, read_metadata

__all__ = ["main", "run", "build_tape"]

MBP1 = (Path(__file__).resolve().parents[1] / "tests" / "data" / "nautilus_trader" / "historical_bars_catalog"
        / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
_MINUTE = 60_000_000_000
_TS_RECV = 32  # byte offset of ts_recv in an MBP-1 record (ts_event is at 8, in the header)


def build_tape(path: Path, records: int, source: Path = MBP1) -> int:
    """Write about `records` records of `source` (an MBP-1 file), copies shifted in time; return the count."""
    import zstandard

    data = read_file(source)
    _, offset = read_metadata(data)
    size = data[offset] * 4
    body = np.frombuffer(data[offset:], np.uint8).reshape(-1, size)
    ts_event = body[:, 8:16].copy().view("<u8")[:, 0]
    ts_recv = body[:, _TS_RECV : _TS_RECV + 8].copy().view("<u8")[:, 0]
    span = int(max(ts_event.max(), ts_recv.max()) - min(ts_event.min(), ts_recv.min()))
    step = (span // _MINUTE + 1) * _MINUTE  # whole minutes: every copy's bars align like the first's
    copies = max(1, records // len(body))
    out = body.copy()
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as fh:
        fh.write(data[:offset])
        for i in range(copies):
            out[:, 8:16] = (ts_event + np.uint64(i * step)).view(np.uint8).reshape(-1, 8)
            out[:, _TS_RECV : _TS_RECV + 8] = (ts_recv + np.uint64(i * step)).view(np.uint8).reshape(-1, 8)
            fh.write(out.tobytes())
    return copies * len(body)


class _TreePeak:
    """Polls a process and its descendants: peak of the summed RSS and of the largest one."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.tree = self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            sizes = []
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    sizes.append(proc.memory_info().rss)
                except psutil.Error:
                    pass
            if sizes:
                self.tree = max(self.tree, sum(sizes))
                self.largest = max(self.largest, max(sizes))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def measure(tape: Path, out: Path, *, time_v: bool = True) -> dict[str, float]:
    """Run ``streamctl replay tape --out out``; peak RSS figures in MB and wall seconds."""
    command = [sys.executable, "-m", "streamctl.cli", "replay", str(tape), "--out", str(out)]
    gnu_time = shutil.which("time", path="/usr/bin") if time_v else None
    if gnu_time:
        command = [gnu_time, "-v", *command]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = _TreePeak(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    peak.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"streamctl replay failed ({proc.returncode}): {err[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    largest = int(found.group(1)) * 1024 if found else peak.largest
    summary = next((line for line in err.splitlines() if line.startswith("replayed ")), "")
    return {"largest": largest / 1e6, "tree": peak.tree / 1e6, "wall": wall, "time_v": bool(found),
            "summary": summary}


def run(quick: bool = False, records: int | None = None, format: str = "jsonl") -> list[dict]:
    target = records or (300_000 if quick else 4_600_000)
    folder = Path(tempfile.mkdtemp(prefix="bench-replay-mem-"))
    try:
        tape = folder / "tape.dbn.zst"
        n = build_tape(tape, target)
        got = measure(tape, folder / f"out.{format}")
        size = (folder / f"out.{format}").stat().st_size
        how = "/usr/bin/time -v" if got["time_v"] else "psutil polling"
        note = f"{n:,} MBP-1 records, default calculators, raw topics, --out .{format}"
        return [
            {"benchmark": "largest process", "value": got["largest"], "unit": "MB",
             "note": f"peak RSS of the largest process ({how}); {note}"},
            {"benchmark": "process tree", "value": got["tree"], "unit": "MB",
             "note": "peak of the summed RSS of every process (psutil, every 0.1 s; shared pages counted per process)"},
            {"benchmark": "wall time", "value": got["wall"], "unit": "s",
             "note": f"{got['summary']}; output {size / 1e6:,.0f} MB"},
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _options(parser) -> None:
    parser.add_argument("--records", type=int, default=None, help="tape size (default 4,600,000; --quick 300,000)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
