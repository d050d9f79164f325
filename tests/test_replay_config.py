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
