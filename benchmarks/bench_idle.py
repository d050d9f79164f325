"""What an idle plant costs: CPU% of a core per process while the market is quiet.

Runs a real plant (the simulator at 1 event/s per symbol, 5 symbols -> 2 workers -> hub) and,
after a warm-up, reads each process's CPU time over a few seconds with psutil. The supervisor
is this process running the same supervision loop as `streamctl up`.

    python benchmarks/bench_idle.py [--quick]
"""

from __future__ import annotations

import os
import time

import psutil
from _table import bench_main

from streamctl.cli.config import parse_config
from streamctl.cli.supervisor import Supervisor


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(seconds: float, *, warm_up: float = 2.0) -> dict[str, float]:
    """CPU% of one core per process of an idle plant, over `seconds`."""
    cfg = parse_config(f"""
name: bi{os.getpid() % 100000}
feeds:
  - {{name: sim, vendor: sim, symbols: [AAPL, MSFT, GOOGL, AMZN, NVDA], options: {{rate: 1, seed: 1}}}}
partitions: {{count: 2}}
calculators:
  bars: {{time: [1s, 60s]}}
  vwap: {{rolling_window: 100}}
  ema: [12]
publish: {{endpoint: "ipc:///tmp/streamctl-bench-idle-{os.getpid()}.sock"}}
""")
    sup = Supervisor(cfg)
    sup.start()
    try:
        sup.run(duration=warm_up)
        procs = {"supervisor": psutil.Process()}
        procs.update({p["name"]: psutil.Process(p["pid"]) for p in sup.status()["processes"]})
        before = {name: _cpu_seconds(proc) for name, proc in procs.items()}
        t0 = time.monotonic()
        sup.run(duration=seconds)
        elapsed = time.monotonic() - t0
        after = {name: _cpu_seconds(proc) for name, proc in procs.items()}
    finally:
        sup.stop()
    return {name: 100 * (after[name] - before[name]) / elapsed for name in procs}


def run(quick: bool = False) -> list[dict]:
    seconds = 4.0 if quick else 10.0
    usage = measure(seconds)
    note = f"sim feed at 1 event/s per symbol, 2 workers; CPU time over {seconds:.0f} s"
    rows = [{"benchmark": f"idle {name}", "value": round(pct, 1), "unit": "% of a core", "note": note}
            for name, pct in usage.items()]
    rows.append({"benchmark": "idle plant, all processes", "value": round(sum(usage.values()), 1),
                 "unit": "% of a core", "note": "sum of the rows above"})
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
