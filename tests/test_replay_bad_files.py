"""`streamctl replay` of a file cut short or empty fails and says so (issue 8, defect 4).

Before, a truncated ``.dbn.zst`` replayed a fraction of its records and an empty ``.dbn``
none, both with exit 0. Now the feed ends FAILED and the command exits non-zero naming the
file, what was wrong and how many records were read, and writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _data import sample

pytestmark = pytest.mark.timeout(300)

TRADES = sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")


def _replay_fails(tmp_path: Path, path: Path) -> str:
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(path), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and not out.exists(), proc.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.jsonl")]  # no partial file either
    return proc.stderr


def test_replay_of_a_truncated_zst_fails_with_the_records_read(tmp_path):
    data = TRADES.read_bytes()
    cut = tmp_path / "cut.dbn.zst"
    cut.write_bytes(data[: len(data) // 2])
    err = _replay_fails(tmp_path, cut)
    assert "`cut.dbn.zst` truncated: zstd frame cut short; " in err and " records read" in err, err
    read = int(err.split("; ")[1].split(" records read")[0])
    assert 0 < read < 120, err


@pytest.mark.parametrize("name", ["empty.dbn", "empty.dbn.zst"])
def test_replay_of_an_empty_file_fails(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    err = _replay_fails(tmp_path, path)
    assert f"`{name}` is empty; 0 records read" in err, err
