"""Every benchmark in one table (the README's).

    python benchmarks/run_all.py [--quick] [--only ring,worker,...]

Each `bench_<name>.py` beside this file is also runnable alone and exposes
``run(quick) -> [{"benchmark", "value", "unit", "note"}]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path

from _table import fmt

HERE = Path(__file__).resolve().parent
ORDER = [
    "ring",
    "worker",
    "journal",
    "publish",
    "history",
    "recovery",
    "latency",
    "metrics",
    "idle",
    "feed",
    "replay",
    "replay_memory",
    "research_replay",
    "plant",
    "databento_live",
    "cme",
    "ibkr_live",
    "alpaca_live",
    "sinks",
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # multiprocessing children find it by name
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    import os

    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model or platform.processor()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(ORDER))
    args = parser.parse_args(argv)
    rows = []
    for name in args.only.split(","):
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        rows += [dict(row, group=name) for row in _load(name).run(args.quick)]
    print(f"Machine: {machine()}\n")
    print("| area | benchmark | value | unit | note |")
    print("|---|---|---:|---|---|")
    for row in rows:
        print(f"| {row['group']} | {row['benchmark']} | {fmt(row['value'])} | {row['unit']} | {row['note']} |")



if __name__ == "__main__":
    main()
