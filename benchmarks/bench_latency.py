"""Latency from `ts_recv` (the feed stamps it on receipt) to the subscriber's `on_trade` callback.

Runs a real plant (simulator feed at a fixed trade rate -> ring -> worker with the demo
calculators -> hub -> client over TCP loopback) and reports percentiles.

    python benchmarks/bench_latency.py [--quick] [--rate 10000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import socket
import time

import numpy as np
from _table import bench_main

from streamctl.cli.config import parse_config
from streamctl.cli.supervisor import Supervisor


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _subscriber(endpoint: str, seconds: float, results) -> None:
    """The consuming app, in its own process (as a real subscriber would be)."""
    from streamctl.client import Subscriber

    latencies: list[int] = []
    sub = Subscriber(endpoint)
    sub.on_trade(lambda t: latencies.append(time.time_ns() - t.ts_recv))
    sub.subscribe("trade.")
    sub.run(timeout=2.0)  # slow joiner and JIT warm-up: not measured
    latencies.clear()
    sub.run(timeout=seconds)
    sub.close()
    results.put(latencies)


def measure(rate: float, seconds: float, symbols: int = 5) -> dict[str, float]:
    names = [f"S{i:02d}" for i in range(symbols)]
    port = _free_port()
    cfg = parse_config(f"""
name: lat{os.getpid() % 100000}
feeds:
  - {{name: sim, vendor: sim, symbols: [{', '.join(names)}], options: {{rate: {rate / symbols}, trade_share: 1.0,
     quote_share: 0.0, batch: 64}}}}
partitions: {{count: 1}}
calculators:
  bars: {{time: [1s, 60s], ticks: [100]}}
  ema: [12]
  anomalies: {{zscore: {{window: 100, threshold: 5.0}}}}
publish: {{endpoint: "tcp://127.0.0.1:{port}", raw_trades: true, raw_quotes: false}}
""")
    sup = Supervisor(cfg)
    sup.start()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    app = ctx.Process(target=_subscriber, args=(cfg.publish.endpoint, seconds, results))
    try:
        app.start()
        latencies = None
        while latencies is None:
            sup.step()
            try:
                latencies = results.get(timeout=0.1)
            except queue.Empty:
                if not app.is_alive():
                    raise RuntimeError("the subscriber process died") from None
        app.join(10)
    finally:
        if app.is_alive():
            app.kill()
        sup.stop()
    lat = np.asarray(latencies, dtype=np.float64) / 1e3
    return {
        "count": len(lat),
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "p99.9": float(np.percentile(lat, 99.9)),
        "max": float(lat.max()),
    }


def run(quick: bool = False, rate: float = 10_000, seconds: float | None = None) -> list[dict]:
    result = measure(rate, seconds or (3.0 if quick else 10.0))
    note = f"{result['count']} trades at {rate:.0f}/s over TCP loopback to a subscriber process"
    return [
        {"benchmark": f"latency ts_recv -> on_trade {q}", "value": round(result[q], 1), "unit": "us", "note": note}
        for q in ("p50", "p99", "p99.9", "max")
    ]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=10_000, help="trades per second")
    parser.add_argument("--seconds", type=float, default=None)


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
