"""The two references a plant's output is checked against.

`replay_rows`: `streamctl replay FILE --config C --out` (the batch pipeline over the file).
`journal_rows`: a fresh `CalculatorSet` fed a worker's journal, entry by entry, once through:
what a worker that was never restarted publishes for exactly the batches and clock closes that
worker saw (per-batch outputs such as VWAP and books depend on where a live batch was cut, so
only bars can be compared with `streamctl replay`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from streamctl.bus.wire import parse_topic
from streamctl.cli.tailing import to_row
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import CalculatorsConfig
from streamctl.process.journal.files import CLOCK, FLUSH, RECORDS, SYMBOL, read_entries, run_files

__all__ = ["replay_rows", "journal_rows", "by_topic"]


def by_topic(rows: list[dict], kinds: set[str]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if parse_topic(row["topic"]).kind in kinds:
            grouped[row["topic"]].append(row)
    return dict(grouped)


def replay_rows(files: list[Path], config: Path, tmp: Path) -> list[dict]:
    """Every row `streamctl replay` writes for `files` with `config`'s calculators."""
    out = tmp / "replay.jsonl"
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp / "run"))
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", *map(str, files), "--config",
                           str(config), "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def journal_rows(directory: Path, calculators: CalculatorsConfig, *, partition: int = 0,
                 src: str = "worker-0") -> list[dict]:
    """The calculator messages (no raw ticks) of one uninterrupted pass over the journal of the
    one run in `directory`, numbered per topic as the worker's publisher numbers them."""
    (mark,) = directory.glob("*.sent")
    calc = CalculatorSet(calculators, src=src, live=True)
    local: dict[tuple[int, int], int] = {}
    seqs: dict[str, int] = defaultdict(int)
    rows = []
    for path in run_files(directory, int(mark.stem)):
        for entry in read_entries(path, partition=partition, repair=False):
            if entry.kind == SYMBOL:
                local[entry.ring, entry.count] = calc.add_symbol(entry.symbol)
                continue
            if entry.kind == RECORDS:
                ids = entry.payload["instrument_id"].tolist()
                idx = np.array([local.get((entry.ring, i), -1) for i in ids], dtype=np.int32)
                outputs = calc.on_batch(entry.payload[idx >= 0], idx[idx >= 0]).decode()
            elif entry.kind == CLOCK:
                outputs = calc.on_clock(entry.payload).decode()
            else:
                assert entry.kind == FLUSH
                outputs = calc.flush().decode()
            for topic, payload in outputs:
                seqs[topic] += 1
                payload.seq, payload.src = seqs[topic], src  # type: ignore[attr-defined]
                rows.append(to_row(topic, payload))
    return rows
