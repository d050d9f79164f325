"""Publisher -> proxy -> subscriber throughput, for bars (single maps) and raw trades (arrays).

Run: ``python benchmarks/bench_publish.py [--quick]``. The proxy and the publisher are
spawned processes; the subscriber is `streamctl.client.Subscriber` in this process (so its
rate includes decoding into typed Structs and one callback per message). Every message
carries a sequence number, so loss at a high-water mark is measured, not guessed. A last
pair of rows compares the two ways of sending a two-frame message from Python. The internal
endpoint uses CURVE with fresh keys, as in a plant; the ``no CURVE`` rows measure it without.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time

import numpy as np
import zmq
from _table import bench_main

from streamctl.bus import wire
from streamctl.bus.curve import CurveClient, plant_keys
from streamctl.bus.proxy import serve
from streamctl.bus.publisher import Publisher
from streamctl.client import Subscriber
from streamctl.shm.records import Kind, Side, empty

__all__ = ["main", "run"]

_CTX = mp.get_context("spawn")
_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRK.B"]


def _bar(symbol: str, i: int) -> wire.Bar:
    px = 100.0 + (i % 100) / 100
    return wire.Bar(symbol=symbol, interval="60s", ts_start=i * 60_000_000_000, ts_end=(i + 1) * 60_000_000_000,
                    open=px, high=px + 0.5, low=px - 0.5, close=px, volume=1234.0, trades=17, vwap=px,
                    ts_event=i, ts_recv=i + 1)


def _records(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    rec = empty(batch)
    rec["kind"] = Kind.TRADE
    rec["side"] = rng.choice([Side.BID, Side.ASK, Side.NONE], size=batch)
    rec["price"] = rng.integers(10_000, 20_000, size=batch) * 10_000_000
    rec["size"] = rng.integers(1, 500, size=batch)
    rec["ts_event"] = np.arange(batch) + 1_700_000_000_000_000_000
    rec["ts_recv"] = rec["ts_event"] + 1000
    return rec, rng.integers(0, len(_SYMBOLS), size=batch).astype(np.int32)


def _publisher(endpoint: str, mode: str, total: int, batch: int, go, out, curve: CurveClient | None) -> None:
    """Spawned: probe until the subscriber is live, then publish `total` items as fast as possible."""
    # A long linger: close() must not discard the tail still queued behind a slow subscriber.
    with Publisher(endpoint, src="bench", sndhwm=100_000, linger=60_000, curve=curve) as pub:
        while not go.wait(0.02):
            pub.publish("event.bench", wire.Event(source="bench", kind="probe", message="", ts=0))
        if mode == "bars":
            bars = [(f"bar.60s.{_SYMBOLS[i % len(_SYMBOLS)]}", _bar(_SYMBOLS[i % len(_SYMBOLS)], i)) for i in range(total)]
            start = time.perf_counter()
            for k in range(0, total, 1000):
                pub.publish_many(bars[k : k + 1000])
            elapsed = time.perf_counter() - start
            messages = total
        else:
            rec, sym_idx = _records(batch)
            start = time.perf_counter()
            messages = 0
            for _ in range(total // batch):
                messages += pub.publish_raw(rec, _SYMBOLS, sym_idx, trades=True, quotes=False)
            elapsed = time.perf_counter() - start
        pub.publish("event.bench", wire.Event(source="bench", kind="end", message="", ts=0))
        out.send((elapsed, messages))


def _end_to_end(mode: str, total: int, batch: int, *, curve: bool = True) -> dict:
    tmp = tempfile.mkdtemp(prefix="scb-", dir="/tmp")
    stop = _CTX.Event()
    parent, child = _CTX.Pipe(duplex=False)
    server, client = plant_keys() if curve else (None, None)
    proxy = _CTX.Process(target=serve, kwargs=dict(frontend=f"ipc://{tmp}/f.ipc", backend="tcp://127.0.0.1:*",
                                                   sndhwm=100_000, ready=child, stop=stop, frontend_curve=server),
                         daemon=True)
    proxy.start()
    procs = [proxy]
    try:
        if not parent.poll(60):
            raise RuntimeError("proxy did not start")
        status, frontend, backend = parent.recv()
        go = _CTX.Event()
        res_r, res_w = _CTX.Pipe(duplex=False)
        pub = _CTX.Process(target=_publisher, args=(frontend, mode, total, batch, go, res_w, client), daemon=True)
        pub.start()
        procs.append(pub)
        counts = {"items": 0, "first": 0.0, "last": 0.0, "end": False}
        with Subscriber(backend, rcvhwm=100_000) as sub:
            def on_message(topic: str, payload) -> None:
                if topic == "event.bench":
                    if payload.kind == "end":
                        counts["end"] = True
                    return
                now = time.perf_counter()
                if not counts["first"]:
                    counts["first"] = now
                counts["last"] = now
                counts["items"] += len(payload) if isinstance(payload, list) else 1

            sub.on_message(on_message)
            sub.on_error(lambda err: None)  # counted in sub.gaps / sub.missed
            sub.subscribe("bar.60s.", "trade.", "event.bench")
            deadline = time.monotonic() + 60
            while sub.last("event.bench") is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("publisher never reached the subscriber")
                sub.poll(0.05)
            go.set()
            deadline = time.monotonic() + 120
            result = None
            idle_since = time.monotonic()
            while not counts["end"] and time.monotonic() < deadline:
                if sub.poll(0.1):
                    idle_since = time.monotonic()
                if result is None and res_r.poll(0):
                    result = res_r.recv()
                if result is not None and time.monotonic() - idle_since > 3:
                    break  # the end marker itself was lost
            if result is None:
                result = res_r.recv() if res_r.poll(30) else (float("nan"), 0)
            expected_items = total if mode == "bars" else (total // batch) * batch
            elapsed_pub, messages = result
            received = counts["items"]
            span = max(counts["last"] - counts["first"], 1e-9)
            return {"pub_rate": (expected_items / elapsed_pub), "e2e_rate": received / span,
                    "loss": 1 - received / expected_items, "gaps": sub.gaps, "missed": sub.missed,
                    "messages": messages}
    finally:
        stop.set()
        for p in reversed(procs):
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _send_methods(n: int) -> dict[str, float]:
    """Time `n` two-frame sends each way into a connected, subscribed (unread) SUB."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    for s in (pub, sub):
        s.linger = 0
    pub.sndhwm = 0
    sub.rcvhwm = 0
    sub.subscribe(b"")
    pub.bind("inproc://bench-send")
    sub.connect("inproc://bench-send")
    frame = wire.topic_frame("bar.60s.AAPL")
    body = b"x" * 200
    while not sub.poll(10):  # slow joiner: wait until a message gets through
        pub.send_multipart([frame, body])
    rates = {}
    try:
        for name in ("send_multipart", "send + SNDMORE"):
            start = time.perf_counter()
            if name == "send_multipart":
                for _ in range(n):
                    pub.send_multipart([frame, body])
            else:
                for _ in range(n):
                    pub.send(frame, zmq.SNDMORE)
                    pub.send(body)
            rates[name] = n / (time.perf_counter() - start)
            while sub.poll(0):  # empty the queue between runs
                sub.recv_multipart()
    finally:
        pub.close()
        sub.close()
        ctx.term()
    return rates


def run(quick: bool = False) -> list[dict]:
    bars_n = 50_000 if quick else 300_000
    batch = 1024
    trades_n = batch * (200 if quick else 2000)
    rows: list[dict] = []
    b = _end_to_end("bars", bars_n, batch)
    rows.append({"benchmark": "bars: publish (publisher process)", "value": round(b["pub_rate"]), "unit": "msgs/s",
                 "note": f"{bars_n} Bar maps, publish_many"})
    rows.append({"benchmark": "bars: publisher -> proxy -> client", "value": round(b["e2e_rate"]), "unit": "msgs/s",
                 "note": f"typed decode + callback; lost {b['loss']:.1%} ({b['missed']} seen as gaps)"})
    t = _end_to_end("trades", trades_n, batch)
    rows.append({"benchmark": "raw trades: publish_raw", "value": round(t["pub_rate"]), "unit": "trades/s",
                 "note": f"batches of {batch} records over {len(_SYMBOLS)} symbols, {t['messages']} arrays"})
    rows.append({"benchmark": "raw trades: publisher -> proxy -> client", "value": round(t["e2e_rate"]),
                 "unit": "trades/s", "note": f"list[Trade] decode; lost {t['loss']:.1%} ({t['missed']} seen as gaps)"})
    for mode, n, unit in (("bars", bars_n, "msgs/s"), ("trades", trades_n, "trades/s")):
        plain = _end_to_end(mode, n, batch, curve=False)
        rows.append({"benchmark": f"{'bars' if mode == 'bars' else 'raw trades'}: end to end, no CURVE",
                     "value": round(plain["e2e_rate"]), "unit": unit,
                     "note": f"the internal endpoint without authentication; lost {plain['loss']:.1%}"})
    for name, rate in _send_methods(50_000 if quick else 300_000).items():
        rows.append({"benchmark": f"two-frame send: {name}", "value": round(rate), "unit": "msgs/s",
                     "note": "one process, PUB -> subscribed SUB over inproc"})
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
