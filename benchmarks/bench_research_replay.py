"""60 s bars from a 4.6 M-record MBP-1 tape: ``streamctl replay`` beside NautilusTrader and databento + pandas.

The research task of issue 13, wall clock, in one run. The tape is `bench_replay_memory`'s
(the ESU4 MBP-1 sample repeated, each copy shifted forward by whole minutes). Each contender
is its own process, timed from its start to its exit (Python's start-up and imports count for
everyone) under ``/usr/bin/time -v`` for its peak resident memory:

- ours: ``streamctl replay TAPE --config <60 s bars only, no raw topics> --out bars.jsonl``
  (the whole plant: forkserver, hub, worker, feed; bars closed by event time);
- NautilusTrader: ``DatabentoDataLoader.from_dbn_file(instrument_id=ESU4.GLBX, include_trades=True)``
  (the tape is one instrument, and its copies run past the dates its symbology maps), then its
  ``TimeBarAggregator`` (1-MINUTE-LAST-EXTERNAL) fed every trade, its clock advanced to each
  trade's ``ts_event``, as a backtest drives it. NautilusTrader pins its own pandas and is
  never a project dependency: it is installed into a throwaway virtualenv of its own
  (``--nautilus-venv``, default ``~/.cache/streamctl-bench/nautilus``, made on first use;
  it needs Python 3.11+ and PyPI);
- databento + pandas: ``DBNStore.from_file(TAPE).to_df()``, the trades (action ``T``)
  resampled to 60 s OHLC and volume.

Also ``start-up``: ``streamctl replay`` of the 2,288-record sample with the same config, run
once before to load numba's cache: what a command costs before the data starts to matter;
and its parts, each in a fresh interpreter (best of 3): the interpreter alone, the command's
own imports, and the forkserver's preload (imports, then numba's cached kernels). Every
contender's bars are checked against ours (open, high, low, close, volume of every bar both
closed), so the comparison is of the same result.

Every contender runs as installed: pip compiled NautilusTrader's, databento's and pandas's
bytecode at install time, and ours (a source checkout) is cached by the warm-up run, so
``PYTHONDONTWRITEBYTECODE`` is removed from the contenders' environment (with it, every run of
ours would compile its ~150 modules from source, twice: in the command and in the forkserver).

    python benchmarks/bench_research_replay.py [--quick] [--nautilus-venv DIR] [--repeat N]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import bench_main
from bench_replay_memory import MBP1, build_tape

__all__ = ["main", "run"]

NAUTILUS = "nautilus_trader==1.221.0"
"""The version measured (the last supporting Python 3.11)."""

CONFIG = """\
name: research
feeds: []
calculators:
  bars: {time: [60s]}
publish: {raw_trades: false, raw_quotes: false}
"""

_NAUTILUS_SCRIPT = """\
import json, sys
from nautilus_trader.adapters.databento.loaders import DatabentoDataLoader
from nautilus_trader.common.component import TestClock
from nautilus_trader.data.aggregation import TimeBarAggregator
from nautilus_trader.model.data import BarType, TradeTick
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.test_kit.providers import TestInstrumentProvider

instrument = TestInstrumentProvider.es_future(2024, 9, venue=Venue("GLBX"))
ticks = DatabentoDataLoader().from_dbn_file(sys.argv[1], instrument_id=instrument.id, include_trades=True)
clock = TestClock()
bars = []
aggregator = None
for tick in ticks:
    if not isinstance(tick, TradeTick):
        continue
    if aggregator is None:
        clock.set_time(tick.ts_event)
        bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
        aggregator = TimeBarAggregator(instrument, bar_type, bars.append, clock)
    for event in clock.advance_time(tick.ts_event):
        event.handle()
    aggregator.handle_trade_tick(tick)
with open(sys.argv[2], "w") as fh:
    json.dump([[b.ts_event - 60_000_000_000, b.open.as_double(), b.high.as_double(), b.low.as_double(),
                b.close.as_double(), b.volume.as_double()] for b in bars if b.volume.as_double() > 0], fh)
"""

_PANDAS_SCRIPT = """\
import json, sys
import databento as db

df = db.DBNStore.from_file(sys.argv[1]).to_df()
trades = df[df["action"] == "T"].set_index("ts_event")
bars = trades["price"].resample("60s").ohlc()
bars["volume"] = trades["size"].resample("60s").sum()
bars = bars.dropna()
with open(sys.argv[2], "w") as fh:
    json.dump([[int(ts.value), *map(float, row)] for ts, row in zip(bars.index, bars.to_numpy())], fh)
"""


def _timed(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (MB, the largest process ``time -v`` saw) of `command`."""
    gnu_time = shutil.which("time", path="/usr/bin")
    started = time.perf_counter()
    proc = subprocess.run([gnu_time, "-v", *command] if gnu_time else command, capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall": wall, "rss": int(found.group(1)) / 1e3 if found else float("nan")}


def nautilus_python(venv: Path) -> Path:
    """The Python of a virtualenv holding NautilusTrader, made (once) if missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import nautilus_trader"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {NAUTILUS} into {venv} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", NAUTILUS], check=True)
    return python


def _our_bars(path: Path) -> list[list[float]]:
    rows = (json.loads(line) for line in path.read_text().splitlines())
    return [[r["ts_start"], r["open"], r["high"], r["low"], r["close"], r["volume"]]
            for r in rows if r["topic"].startswith("bar.60s.")]


def _agreement(ours: list[list[float]], theirs: list[list[float]]) -> str:
    """How many of their bars ours has, equal (bars only one side closed, e.g. the last, are not compared)."""
    mine = {int(b[0]): b[1:] for b in ours}
    common = [b for b in theirs if int(b[0]) in mine]
    same = sum(mine[int(b[0])] == [float(x) for x in b[1:]] for b in common)
    return f"{same:,} of {len(theirs):,} bars equal to ours"


_PRELOAD_PARTS = """\
import time
start = time.perf_counter()
import streamctl.cli.preload as preload
print(time.perf_counter() - start, preload.SECONDS)
"""


def _startup_parts(env: dict[str, str]) -> list[dict]:
    """Where the start-up goes, each part in a fresh interpreter, best of 3 (wall seconds)."""
    from streamctl.cli.forkserver import WARM_LIVE, WARM_VENDORS

    def best(code: str, extra: dict[str, str] | None = None) -> list[float]:
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], env={**env, **(extra or {})}, capture_output=True,
                                 text=True, check=True).stdout
            runs.append([time.perf_counter() - started, *map(float, out.split())])
        return min(runs)

    interpreter = best("pass")[0]
    command = best("import streamctl.cli.main, streamctl.cli.replaying")[0]
    _, imports_and_kernels, kernels = best(_PRELOAD_PARTS, {WARM_VENDORS: "replay", WARM_LIVE: "0"})  # as `replay` starts it
    return [
        {"benchmark": "start-up: interpreter", "value": interpreter, "unit": "s", "note": "python -c pass"},
        {"benchmark": "start-up: command imports", "value": command, "unit": "s",
         "note": "interpreter + the replay command's own imports (no numba)"},
        {"benchmark": "start-up: preload imports", "value": imports_and_kernels - kernels, "unit": "s",
         "note": "the forkserver's imports (numba, numpy, zmq, the plant's modules), in-process"},
        {"benchmark": "start-up: kernels", "value": kernels, "unit": "s",
         "note": "the forkserver's numba kernels loaded from the cache (calculators, sends, raw trades, DBN, routing)"},
    ]


def run(quick: bool = False, nautilus_venv: str | None = None, repeat: int | None = None) -> list[dict]:
    records = 300_000 if quick else 4_600_000
    repeat = repeat or (1 if quick else 2)
    folder = Path(tempfile.mkdtemp(prefix="bench-research-"))
    venv = Path(nautilus_venv or Path.home() / ".cache" / "streamctl-bench" / "nautilus")
    try:
        tape = folder / "tape.dbn.zst"
        n = build_tape(tape, records)
        config = folder / "research.yaml"
        config.write_text(CONFIG)
        (folder / "nautilus.py").write_text(_NAUTILUS_SCRIPT)
        (folder / "pandas_bars.py").write_text(_PANDAS_SCRIPT)
        env = dict(os.environ, STREAMCTL_RUN_DIR=str(folder / "run"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed (module docstring)
        ours_cmd = [sys.executable, "-m", "streamctl.cli", "replay", "--config", str(config)]
        _timed([*ours_cmd, str(MBP1), "--out", str(folder / "warm.jsonl")], env)  # numba's cache loaded once
        startup = min(_timed([*ours_cmd, str(MBP1), "--out", str(folder / "small.jsonl")], env)["wall"]
                      for _ in range(3))
        parts = _startup_parts(env)
        python = nautilus_python(venv)
        best: dict[str, dict[str, float]] = {}
        contenders = {
            "streamctl": [*ours_cmd, str(tape), "--out", str(folder / "ours.jsonl")],
            "nautilus": [str(python), str(folder / "nautilus.py"), str(tape), str(folder / "nautilus.json")],
            "pandas": [sys.executable, str(folder / "pandas_bars.py"), str(tape), str(folder / "pandas.json")],
        }
        for _ in range(repeat):  # interleaved, so a busy moment of the machine hits everyone alike
            for name, command in contenders.items():
                got = _timed(command, env)
                if name not in best or got["wall"] < best[name]["wall"]:
                    best[name] = got
        ours = _our_bars(folder / "ours.jsonl")
        agree = {name: _agreement(ours, json.loads((folder / f"{name}.json").read_text()))
                 for name in ("nautilus", "pandas")}
        what = f"{n:,} MBP-1 records -> {len(ours):,} 60 s bars"
        mine = best["streamctl"]
        return [
            {"benchmark": "streamctl replay", "value": mine["wall"], "unit": "s",
             "note": f"{what}; peak RSS {mine['rss']:,.0f} MB (largest process); best of {repeat}"},
            {"benchmark": "NautilusTrader", "value": best["nautilus"]["wall"], "unit": "s",
             "note": f"Databento loader + TimeBarAggregator: {best['nautilus']['wall'] / mine['wall']:.1f}x ours; "
                     f"peak RSS {best['nautilus']['rss']:,.0f} MB; {agree['nautilus']}"},
            {"benchmark": "databento + pandas", "value": best["pandas"]["wall"], "unit": "s",
             "note": f"to_df() + resample('60s'): {best['pandas']['wall'] / mine['wall']:.1f}x ours; "
                     f"peak RSS {best['pandas']['rss']:,.0f} MB; {agree['pandas']}"},
            {"benchmark": "start-up", "value": startup, "unit": "s",
             "note": "streamctl replay of the 2,288-record sample, kernels cached (best of 3)"},
            *parts,
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _options(parser) -> None:
    parser.add_argument("--nautilus-venv", default=None,
                        help="virtualenv for NautilusTrader (default ~/.cache/streamctl-bench/nautilus; made if missing)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender, best kept (default 2; --quick 1)")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
