"""Impossible values never reach a ring: they are counted as malformed and said once, by kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

GOOD = [("1719878281000000000", "ESU4", "5528.5", "2"), ("1719878282000000000", "ESU4", "5529.0", "1"),
        ("1719878283000000000", "ESU4", "5528.75", "3")]
BAD = [("1719878281500000000", "ESU4", "1e20", "1"),  # overflows the fixed point
       ("-1", "ESU4", "5528.5", "1"),  # a negative time
       ("1719878282500000000", "ESU4", "5528.5", "-5"),  # a negative size
       ("1719878282600000000", "ESU4", "-3", "1"),  # a negative price on a feed that does not allow it
       ("1719878282700000000", "ESU4", "nan", "1")]


def test_replay_publishes_only_possible_trades(tmp_path: Path):
    rows = sorted(GOOD + BAD, key=lambda r: r[0] if r[0] != "-1" else "0")
    csv = tmp_path / "trades.csv"
    csv.write_text("ts_event,symbol,price,size\n" + "\n".join(",".join(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(csv), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    trades = [json.loads(line) for line in out.read_text().splitlines() if line.startswith('{"topic": "trade.')]
    assert [(t["price"], t["size"]) for t in trades] == [(5528.5, 2.0), (5529.0, 1.0), (5528.75, 3.0)]
    bars = [json.loads(line) for line in out.read_text().splitlines() if '"topic": "bar.' in line]
    assert all(5528.5 <= b["low"] <= b["high"] <= 5529.0 for b in bars)
    for reason in ("time", "price", "size"):
        assert f"records refused ({reason})" in proc.stderr
