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


def test_hostile_csv_lines_are_counted_and_the_rest_kept(tmp_path: Path):
    from streamctl.ingest.formats.tabular import iter_tabular

    path = tmp_path / "hostile.csv"
    path.write_bytes(b"ts_event,symbol,price,size\n"
                     b"1719878281000000000,ESU4,5528.5,2\n"
                     b"1719878281100000000,ES\xe9U4,5528.5,2\n"  # latin-1, not UTF-8
                     b"1719878281200000000,ES\x00U4,5528.5,2\n"  # a NUL: the csv module refuses the line
                     b"1719878281300000000," + b"X" * 60 + b",5528.5,2\n"  # a symbol no topic can carry
                     b"1719878281400000000,ESU4,5529.0,1\n")
    batches = list(iter_tabular(str(path), format="csv"))
    records = [r for b in batches for r in b.records]
    assert [(int(r["ts_event"]), int(r["price"])) for r in records] == [
        (1719878281000000000, 5_528_500_000_000), (1719878281400000000, 5_529_000_000_000)]
    assert sum(b.malformed for b in batches) == 3


def test_a_corrupt_parquet_file_is_one_clear_error(tmp_path: Path):
    from streamctl.ingest.formats.tabular import TabularError, iter_tabular

    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    with pytest.raises(TabularError, match="is not a readable Parquet file"):
        list(iter_tabular(str(path), format="parquet"))


def test_a_symbol_no_topic_can_carry_is_refused_and_the_feed_goes_on():
    """A gateway's 60-byte symbol mapping (or a non-ASCII one) used to crash the feed in a loop."""
    import numpy as np
    from _shmutil import no_leaks, unique_plant

    from streamctl.ingest.feed import FeedRuntime, FeedSpec
    from streamctl.ingest.vendor_api import FeedConfig
    from streamctl.shm.records import RECORD_DTYPE, Kind
    from streamctl.shm.registry import NO_INSTRUMENT, SymbolRegistry
    from streamctl.shm.ring import Ring
    from streamctl.shm.segments import segment_name
    from streamctl.shm.stats import CounterName, ProcessTable

    with no_leaks(unique_plant("sym")) as plant:
        registry = SymbolRegistry.create(segment_name(plant, "sym", "f"), 16, plant=plant)
        ring = Ring.create(segment_name(plant, "ring", "f_p0"), 64, plant=plant)
        table = ProcessTable.create(segment_name(plant, "stats"), 1, plant=plant)
        try:
            spec = FeedSpec(plant=plant, name="f", slot=0, feed=FeedConfig(name="f", vendor="sim"), partitions=1,
                            rings=[ring.name], registry=registry.name, stats=table.name, events_endpoint="")
            runtime = FeedRuntime(spec, registry=registry, rings=[ring], slot=table.slot(0), publisher=None)
            ids = [runtime.instrument_id(s) for s in ("ESU4", "X" * 60, "caf\u00e9", "ESU4")]
            assert ids == [1, NO_INSTRUMENT, NO_INSTRUMENT, 1] and len(registry) == 1
            more = [runtime.instrument_id(f"S{i}") for i in range(20)]  # the registry holds 16 symbols
            assert more[:15] == list(range(2, 17)) and set(more[15:]) == {NO_INSTRUMENT}
            batch = np.zeros(3, RECORD_DTYPE)
            batch["ts_event"] = batch["ts_recv"] = 1_719_878_281_000_000_000
            batch["kind"], batch["price"], batch["size"] = Kind.TRADE, 5_528_500_000_000, 1
            batch["instrument_id"] = [ids[0], ids[1], ids[0]]
            runtime.route(batch, lambda: False)
            assert len(ring.consume(16)) == 2
            assert table.slot(0).get(CounterName.MALFORMED) == 1
        finally:
            for segment in (registry, ring, table):
                segment.close()
                segment.unlink()
