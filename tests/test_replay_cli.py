"""`streamctl replay` over the real Databento samples, against a databento-dbn + pandas reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _data import sample

from streamctl.bus.wire import parse_topic

pytestmark = pytest.mark.timeout(300)

TRADES = sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
MBP1 = sample("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
MBO = sample("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst")


def _replay(tmp_path: Path, *files: Path, out: str, extra: tuple[str, ...] = ()) -> int:
    """Run `streamctl replay` to completion; its pid (its plant is named ``replay-<pid>``)."""
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    with subprocess.Popen([sys.executable, "-m", "streamctl.cli", "replay", *map(str, files), "--out", out, *extra],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        _, err = child.communicate(timeout=240)
    assert child.returncode == 0, err
    return child.pid


def _reference_bars(path: Path, interval_s: int = 60) -> list[dict]:
    """60 s bars from the file's trade records, with databento-dbn as the decoder and pandas."""
    import databento as db

    frame = pd.DataFrame(db.DBNStore.from_file(path).to_ndarray())
    trades = frame[frame["action"] == b"T" if frame["action"].dtype == object else frame["action"] == "T"]
    trades = trades.sort_index(kind="stable")
    step = interval_s * 1_000_000_000
    trades = trades.assign(start=(trades["ts_event"].astype("int64") // step) * step,
                           px=trades["price"].astype("int64"), sz=trades["size"].astype("int64"))
    bars = []
    for start, group in trades.groupby("start", sort=True):
        # The documented order: a sequential sum of price * size, in arrival order.
        notional = float(np.cumsum((group["px"].to_numpy() / 1e9) * group["sz"].to_numpy())[-1])
        volume = int(group["sz"].sum())
        bars.append({
            "ts_start": int(start), "ts_end": int(start) + step,
            "open": group["px"].iloc[0] / 1e9, "high": group["px"].max() / 1e9, "low": group["px"].min() / 1e9,
            "close": group["px"].iloc[-1] / 1e9, "volume": float(volume), "trades": len(group),
            "vwap": notional / volume,
            "ts_event": int(group["ts_event"].iloc[-1]),
        })
    return bars


def _bars(path: Path, topic_prefix: str = "bar.60s.") -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["topic"].startswith(topic_prefix)]


@pytest.mark.parametrize("source", [TRADES, MBP1, MBO], ids=["trades", "mbp-1", "mbo"])
def test_replay_60s_bars_equal_reference(tmp_path, source):
    out = tmp_path / "bars.jsonl"
    _replay(tmp_path, source, out=str(out))
    ours = _bars(out)
    reference = _reference_bars(source)
    assert len(ours) == len(reference) > 0
    for bar, ref in zip(ours, reference, strict=True):
        for field, value in ref.items():
            assert bar[field] == value, (field, bar, ref)


def test_replay_output_is_byte_identical_and_parquet_works(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pids = [_replay(tmp_path, MBP1, out=str(first)), _replay(tmp_path, MBP1, out=str(second))]
    assert first.read_bytes() == second.read_bytes()
    topics = {parse_topic(json.loads(line)["topic"]).kind for line in first.read_text().splitlines()}
    assert {"bar", "trade", "quote", "vwap", "ema"} <= topics
    parquet = tmp_path / "a.parquet"
    pids.append(_replay(tmp_path, MBP1, out=str(parquet)))
    table = pd.read_parquet(parquet)
    assert len(table) == len(first.read_text().splitlines())
    ours = tuple(f"stc_replay-{pid}_" for pid in pids)  # other replays may run beside this test
    assert (tmp_path / "run").exists() and not [p for p in os.listdir("/dev/shm") if p.startswith(ours)]


def test_replay_refuses_missing_and_unknown_files(tmp_path):
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(bad)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "unknown extension" in proc.stderr and "Traceback" not in proc.stderr
