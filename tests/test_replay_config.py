"""`streamctl replay FILE --config C` lends C's calculators and partitions, never its feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamctl.cli.config import ConfigError, parse_config

LENDER = textwrap.dedent("""\
    name: lender
    feeds:
      - name: live
        vendor: replay
        options: {files: [/no/such/recording.dbn.zst]}
      - name: vendor
        vendor: databento
        symbols: [ESU4]
        options: {dataset: GLBX.MDP3, schemas: [trades], key: "${NOT_SET_ANYWHERE}"}
    partitions: {count: 2}
    calculators:
      bars: {time: [1s], ticks: [2]}
    """)


def test_ignored_feeds_are_neither_interpolated_nor_checked():
    cfg = parse_config(LENDER, environ={}, feeds="ignore")
    assert cfg.feeds == [] and cfg.partitions.count == 2 and cfg.calculators.bars.ticks == [2]


def test_checked_feeds_still_refuse_what_is_missing():
    with pytest.raises(ConfigError, match="needs environment variable NOT_SET_ANYWHERE"):
        parse_config(LENDER, environ={})
    with pytest.raises(ConfigError, match=r"`feeds` must list at least one feed"):
        parse_config("name: x\nfeeds: []\n")


def test_the_rest_of_a_lent_config_is_still_validated():
    with pytest.raises(ConfigError, match=r"`partitions.count` must be int >= 1; was 0"):
        parse_config(LENDER.replace("count: 2", "count: 0"), environ={}, feeds="ignore")


@pytest.mark.timeout(240)
def test_replay_takes_calculators_from_a_config_whose_feeds_do_not_exist(tmp_path: Path):
    trades = tmp_path / "trades.csv"
    rows = [f"{1_700_000_000_000_000_000 + i * 400_000_000},ABC,{100 + i},{i + 1}" for i in range(6)]
    trades.write_text("ts_event,symbol,price,size\n" + "\n".join(rows) + "\n")
    config = tmp_path / "lender.yaml"
    config.write_text(LENDER)
    out = tmp_path / "bars.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"}
    env["STREAMCTL_RUN_DIR"] = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(trades), "--config", str(config),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    topics = [json.loads(line)["topic"] for line in out.read_text().splitlines()]
    assert topics.count("bar.2t.ABC") == 3  # tick bars of the lent config: 6 trades, 2 per bar
    assert "bar.1s.ABC" in topics


def _run_replay(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    return subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", *args], env=env, capture_output=True,
                          text=True, timeout=200)


def _small_csv(tmp_path: Path) -> Path:
    trades = tmp_path / "t.csv"
    trades.write_text("ts_event,symbol,price,size\n1700000000000000000,ABC,10,1\n1700000001000000000,ABC,11,2\n")
    return trades


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("out", "message"), [
    ("missing-folder/bars.jsonl", "`--out` folder does not exist"),
    ("bars.txt", "`--out` must end in .jsonl or .parquet; was"),
])
def test_an_unwritable_output_is_refused_before_the_replay_runs(tmp_path: Path, out: str, message: str):
    proc = _run_replay(tmp_path, str(_small_csv(tmp_path)), "--out", str(tmp_path / out))
    assert proc.returncode != 0 and message in proc.stderr
    assert "replayed" not in proc.stderr and not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.timeout(240)
def test_a_replay_leaves_no_socket_and_writes_atomically(tmp_path: Path):
    out = tmp_path / "bars.jsonl"
    proc = _run_replay(tmp_path, str(_small_csv(tmp_path)), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("replay-")] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.jsonl", "run", "t.csv"]  # no partial file


@pytest.mark.timeout(240)
def test_a_failed_replay_writes_nothing(tmp_path: Path):
    bad = tmp_path / "bad.dbn"
    bad.write_bytes(b"DBN\x09" + b"\xff" * 200)  # a DBN version no decoder knows
    out = tmp_path / "bars.jsonl"
    proc = _run_replay(tmp_path, str(bad), "--out", str(out))
    assert proc.returncode != 0
    assert "unsupported DBN `version` 9" in proc.stderr, proc.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".bars")] == []
