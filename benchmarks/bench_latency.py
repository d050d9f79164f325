"""Live capacity and latency: `ts_recv` -> a subscriber's `on_trade`, beside one bare ZeroMQ hop.

Runs a real plant (simulator feed at a fixed trade rate over 5 symbols -> ring -> worker(s)
with the demo calculators -> hub -> client over TCP loopback) and reports the subscriber's
latency percentiles, what the subscriber lost (sequence gaps) and the rings dropped, and the
CPU the plant's processes took over the measured window, also per thread (utime + stime from
``/proc/<pid>/task/<tid>/stat``) with its voluntary context switches per second (each a sleep,
so a wake-up paid for). On a shared machine the per-thread rows are the readings to trust:
latencies move with the neighbours' load. The anchor, in the same run: one pyzmq PUB -> SUB
hop between two Python processes at the same rate, msgpack maps stamped just before the send
(the floor any Python subscriber of any plant pays).

At 10 k trades/s it also runs the plant with `partitions.linger_ms` at 5 ms: the CPU a few
milliseconds of latency buy back (each batch wakes a chain of sleeping threads; docs/rings.md).

    python benchmarks/bench_latency.py [--quick] [--rate 10000] [--partitions 1] [--linger 0] [--seconds 10]
    python benchmarks/bench_latency.py --rows 100000/1,100000/2   # only these plant rows (RATE/PARTITIONS[/LINGER_MS])
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time

import numpy as np
import psutil
from _table import bench_main

from streamctl.cli.config import parse_config
from streamctl.cli.supervisor import Supervisor

_SYMBOLS = 5
_WARM_UP = 2.0
"""Seconds the subscriber runs before it measures (slow joiner, JIT warm-up)."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(latencies_ns: list[int]) -> dict[str, float]:
    lat = np.asarray(latencies_ns, dtype=np.float64) / 1e3
    if not len(lat):
        return {"count": 0, "p50": float("nan"), "p99": float("nan"), "p99.9": float("nan")}
    return {"count": len(lat), "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "p99.9": float(np.percentile(lat, 99.9))}


# --------------------------------------------------------------------------- the plant


def _subscriber(endpoint: str, seconds: float, results) -> None:
    """The consuming app, in its own process (as a real subscriber would be)."""
    from streamctl.client import Subscriber

    latencies: list[int] = []
    missing = [0]
    sub = Subscriber(endpoint)
    sub.on_trade(lambda t: latencies.append(time.time_ns() - t.ts_recv))
    sub.on_error(lambda e: missing.__setitem__(0, missing[0] + getattr(e, "missing", 0)))
    sub.subscribe("trade.")
    sub.run(timeout=_WARM_UP)
    latencies.clear()
    missing[0] = 0
    recovered = sub.recovered
    results.put("measuring")
    sub.run(timeout=seconds)
    results.put((latencies, missing[0], sub.recovered - recovered))
    sub.close()


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, proc in procs.items():
        try:
            times = proc.cpu_times()
            out[name] = times.user + times.system
        except psutil.Error:
            out[name] = float("nan")
    return out


def _thread_times(procs: dict[str, psutil.Process]) -> dict[tuple[str, int], tuple[str, float, int]]:
    """Per thread of each process: its name (``comm``; ``main`` for the main thread), CPU seconds
    (utime + stime) and voluntary context switches (each one a sleep, so a wake-up to pay for) so
    far. A thread gone is left out."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, proc in procs.items():
        try:
            tids = os.listdir(f"/proc/{proc.pid}/task")
        except OSError:
            continue
        for tid in tids:
            task = f"/proc/{proc.pid}/task/{tid}"
            try:
                with open(f"{task}/stat") as f:
                    stat = f.read()
                with open(f"{task}/status") as f:
                    switches = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
            except (OSError, StopIteration):
                continue
            comm = "main" if int(tid) == proc.pid else stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd (state) on
            out[(name, int(tid))] = (comm, (int(fields[11]) + int(fields[12])) / tick, switches)
    return out


def _thread_split(before: dict, after: dict, elapsed: float) -> list[tuple[str, float, float]]:
    """``(process/thread, % of a core, voluntary switches/s)`` over the window, busiest first;
    threads of one process with one name are summed (``xN``). `run` prints those that took at
    least 0.5 % or woke at least 10 times a second."""
    split: dict[str, list[float]] = {}
    for key, (comm, cpu, switches) in after.items():
        _, cpu0, switches0 = before.get(key, (comm, 0.0, 0))
        entry = split.setdefault(f"{key[0]}/{comm}", [0.0, 0.0, 0])
        entry[0] += 100 * (cpu - cpu0) / elapsed
        entry[1] += (switches - switches0) / elapsed
        entry[2] += 1
    return sorted(((f"{name} x{n:.0f}" if n > 1 else name, cpu, rate) for name, (cpu, rate, n) in split.items()),
                  key=lambda row: -row[1])


def measure(rate: float, seconds: float, partitions: int = 1, linger_ms: float = 0.0) -> dict:
    names = [f"S{i:02d}" for i in range(_SYMBOLS)]
    port = _free_port()
    data = tempfile.mkdtemp(prefix="bench-latency-")  # the journal and history, gone after the run
    cfg = parse_config(f"""
name: lat{os.getpid() % 100000}
feeds:
  - {{name: sim, vendor: sim, symbols: [{', '.join(names)}], options: {{rate: {rate / _SYMBOLS}, trade_share: 1.0,
     quote_share: 0.0}}}}
partitions: {{count: {partitions}, linger_ms: {linger_ms}}}
journal: {{dir: "{data}"}}
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
        got = None
        before: dict[str, float] = {}
        threads: dict = {}
        procs: dict[str, psutil.Process] = {}
        t0 = 0.0
        max_fill = 0
        while got is None:
            sup.step()
            if t0:  # the backlog in the rings while measuring: the worker's side of any delay
                max_fill = max([max_fill] + [r["fill"] for r in sup.status()["rings"]])
            try:
                message = results.get(timeout=0.05)
            except queue.Empty:
                if not app.is_alive():
                    raise RuntimeError("the subscriber process died") from None
                continue
            if message == "measuring":
                procs = {p["name"]: psutil.Process(p["pid"]) for p in sup.status()["processes"]}
                procs["supervisor"] = psutil.Process()
                before, threads, t0 = _cpu(procs), _thread_times(procs), time.monotonic()
            else:
                got = message
        after, elapsed = _cpu(procs), time.monotonic() - t0
        split = _thread_split(threads, _thread_times(procs), elapsed)
        dropped = sum(r["dropped"] for r in sup.status()["rings"])
        app.join(10)
    finally:
        if app.is_alive():
            app.kill()
        sup.stop()
        shutil.rmtree(data, ignore_errors=True)
    latencies, missing, recovered = got
    cpu = {name: 100 * (after[name] - before[name]) / elapsed for name in procs}
    return {**_percentiles(latencies), "cpu": cpu, "dropped": dropped, "missing": missing, "recovered": recovered,
            "max_fill": max_fill, "threads": split}


# --------------------------------------------------------------------------- the anchor


def _hop_publisher(endpoint: str, rate: float, seconds: float, ready) -> None:
    import msgpack
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(endpoint)
    ready.wait(30)
    time.sleep(0.5)  # slow joiner: the subscriber's subscription reaches us
    pack = msgpack.Packer().pack
    t0 = time.monotonic()
    sent = 0
    while (now := time.monotonic() - t0) < seconds:
        due = int(now * rate) - sent
        if due < 1:
            time.sleep(max((sent + 1) / rate - now, 0.0))
            continue
        for _ in range(due):
            sock.send_multipart([b"trade.S00", pack({"ts_recv": time.time_ns(), "price": 1, "size": 1})])
        sent += due
    sock.send_multipart([b"trade.S00", b"end"])
    sock.close(linger=5000)


def one_hop(rate: float, seconds: float) -> dict:
    """The floor: pyzmq PUB -> SUB between two Python processes at `rate` messages/s."""
    import msgpack
    import zmq

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    pub = ctx.Process(target=_hop_publisher, args=(endpoint, rate, _WARM_UP / 2 + seconds, ready))
    pub.start()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SUBSCRIBE, b"trade.")
    sock.connect(endpoint)
    ready.set()
    unpack = msgpack.unpackb
    latencies: list[int] = []
    start = time.monotonic() + _WARM_UP
    try:
        while sock.poll(30_000):
            _, payload = sock.recv_multipart()
            if payload == b"end":
                break
            sent = unpack(payload)["ts_recv"]
            if time.monotonic() >= start:
                latencies.append(time.time_ns() - sent)
    finally:
        sock.close(linger=0)
        pub.join(10)
        if pub.is_alive():
            pub.kill()
    return _percentiles(latencies)


_CASES = [(10_000.0, 1, 0.0), (10_000.0, 1, 5.0), (10_000.0, 2, 0.0), (100_000.0, 1, 0.0), (100_000.0, 2, 0.0)]
"""The plant rows: (trades/s, partitions, ``linger_ms``)."""


def _rows(text: str) -> list[tuple[float, int, float]]:
    """``--rows``: ``RATE/PARTITIONS[/LINGER_MS]``, comma separated (``100000/1,100000/2``)."""
    cases = []
    for case in text.split(","):
        parts = case.split("/")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"a row is RATE/PARTITIONS[/LINGER_MS]; was {case!r}")
        cases.append((float(parts[0]), int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0))
    return cases


def run(quick: bool = False, rate: float | None = None, partitions: int | None = None,
        seconds: float | None = None, linger: float | None = None,
        only: list[tuple[float, int, float]] | None = None) -> list[dict]:
    seconds = seconds or (4.0 if quick else 10.0)
    cases = only or ([(rate, partitions or 1, linger or 0.0)] if rate else _CASES)
    rows = []
    anchor_rate = cases[0][0]  # at 100 k/s a per-message Python subscriber only queues: no floor there
    floor = one_hop(anchor_rate, seconds)
    note = f"anchor: one pyzmq PUB -> SUB hop of msgpack maps, 2 Python processes, {floor['count']} msgs"
    rows += [{"benchmark": f"one hop {anchor_rate / 1e3:.0f} k/s {q}", "value": round(floor[q], 1), "unit": "us",
              "note": note} for q in ("p50", "p99")]
    for r, parts, linger_ms in cases:
        result = measure(r, seconds, parts, linger_ms)
        label = f"plant {r / 1e3:.0f} k trades/s, {parts} partition{'s' if parts > 1 else ''}"
        if linger_ms:
            label += f", linger {linger_ms:g} ms"
        note = (f"{result['count']} trades, {_SYMBOLS} symbols, TCP loopback to a subscriber process; "
                f"ring drops {result['dropped']}, most records waiting in a ring {result['max_fill']}, "
                f"subscriber gaps {result['missing']} (and {result['recovered']} messages refetched from "
                f"the recovery service to fill gaps)")
        rows += [{"benchmark": f"{label}: ts_recv -> on_trade {q}", "value": round(result[q], 1), "unit": "us",
                  "note": note} for q in ("p50", "p99", "p99.9")]
        cpu = result["cpu"]
        plant = {k: v for k, v in cpu.items() if k != "supervisor"}
        detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(plant.items()))
        rows.append({"benchmark": f"{label}: plant CPU", "value": round(sum(plant.values()), 1),
                     "unit": "% of a core", "note": f"{detail}; supervisor {cpu['supervisor']:.0f}"})
        rows += [{"benchmark": f"{label}: thread {thread}", "value": round(share, 1), "unit": "% of a core",
                  "note": f"{switches:.0f} voluntary context switches/s"}
                 for thread, share, switches in result["threads"] if share >= 0.5 or switches >= 10]
    return rows


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=None, help="trades per second (default: 10 k and 100 k)")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--linger", type=float, default=None, help="partitions.linger_ms (with --rate)")
    parser.add_argument("--rows", dest="only", type=_rows, default=None,
                        help="only these plant rows, RATE/PARTITIONS[/LINGER_MS] comma separated (e.g. 100000/1,100000/2)")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
