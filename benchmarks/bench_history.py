"""The output journal's cost on the hub, and how fast history comes back from disk.

Run: ``python benchmarks/bench_history.py [--quick]``. A spawned hub (the proxy and its
recovery service, as in a plant) forwards bars from a spawned publisher to a plain SUB socket
in this process, once with the output journal off and once on, in the same run: the forwarding
rate the subscriber sees, and how long after the last message the service holds everything
(its capture and, when on, its disk writes). Then the reads: every message of a topic from
seq 1 (memory holds 1 KiB, so all from disk) and every message since the start, page by page
through the service's REQ/REP protocol, as a subscriber gets them. Last, the output journal
alone: appends in the service thread's loop, and how long a restarted hub takes to scan and
index what is on disk before it answers.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import zmq
from _table import bench_main

from streamctl.bus import wire
from streamctl.bus.history import HistoryConfig, HistoryJournal
from streamctl.bus.proxy import Proxy
from streamctl.bus.publisher import Publisher
from streamctl.bus.recovery import MAX_REPLY, RecoveryService, ask, service_binds

__all__ = ["main", "run"]

_CTX = mp.get_context("spawn")
_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRKB"]


def _hub(tmp: str, history_dir: str | None, recovery: str, ready, stop) -> None:
    """Spawned: a proxy and its recovery service (1 KiB of memory per topic) until `stop`."""
    proxy = Proxy(frontend=f"ipc://{tmp}/f.ipc", backend="tcp://127.0.0.1:*", sndhwm=1_000_000,
                  capture="inproc://bench-capture")
    proxy.start()
    assert proxy.context is not None and proxy.frontend_endpoint is not None
    service = RecoveryService(proxy.context, capture="inproc://bench-capture", topic_bytes=1024,
                              history=HistoryConfig() if history_dir else None, history_dir=history_dir, run=1,
                              binds=service_binds(internal=proxy.frontend_endpoint, public=recovery,
                                                  internal_curve=None, public_curve=None))
    service.start()
    ready.send((proxy.frontend_endpoint, proxy.backend_endpoint))
    stop.wait()
    service.stop()
    proxy.stop()


def _publisher(endpoint: str, total: int, go, out) -> None:
    """Spawned: once `go`, publish `total` bars round-robin over the symbols, 1,000 per call."""
    with Publisher(endpoint, src="bench", sndhwm=0, linger=60_000) as pub:
        pub.wait_subscribed(30)
        bars = [(f"bar.60s.{_SYMBOLS[i % len(_SYMBOLS)]}", _bar(_SYMBOLS[i % len(_SYMBOLS)], i)) for i in range(total)]
        go.wait()
        start = time.perf_counter()
        for k in range(0, total, 1000):
            pub.publish_many(bars[k:k + 1000])
        out.send(time.perf_counter() - start)


def _bar(symbol: str, i: int) -> wire.Bar:
    px = 100.0 + (i % 100) / 100
    return wire.Bar(symbol=symbol, interval="60s", ts_start=i * 60_000_000_000, ts_end=(i + 1) * 60_000_000_000,
                    open=px, high=px + 0.5, low=px - 0.5, close=px, volume=1234.0, trades=17, vwap=px,
                    ts_event=i, ts_recv=i + 1)


def _one(total: int, history: bool, reads: bool) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="sch-", dir="/tmp")
    recovery = f"ipc://{tmp}/rec.ipc"
    stop, go = _CTX.Event(), _CTX.Event()
    ready_r, ready_w = _CTX.Pipe(duplex=False)
    hub = _CTX.Process(target=_hub, args=(tmp, f"{tmp}/history" if history else None, recovery, ready_w, stop),
                       daemon=True)
    hub.start()
    procs = [hub]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 0
    sub.linger = 0
    try:
        if not ready_r.poll(60):
            raise RuntimeError("hub did not start")
        frontend, backend = ready_r.recv()
        sub.subscribe(b"bar.")
        sub.connect(backend)
        out_r, out_w = _CTX.Pipe(duplex=False)
        pub = _CTX.Process(target=_publisher, args=(frontend, total, go, out_w), daemon=True)
        pub.start()
        procs.append(pub)
        time.sleep(1.0)  # slow joiner: the subscription reaches the hub before the first bar
        go.set()
        got = 0
        first = last = 0.0
        while got < total and sub.poll(30_000):
            sub.recv_multipart()
            last = time.perf_counter()
            first = first or last
            got += 1
        want = {f"bar.60s.{s}": (total - 1 - i) // len(_SYMBOLS) + 1 for i, s in enumerate(_SYMBOLS)}
        deadline = time.monotonic() + 120
        while (ask(recovery, {"op": "seqs", "src": "bench"}, timeout=30) or {}).get("seqs") != want:
            if time.monotonic() > deadline:
                raise RuntimeError("the recovery service never held every bar")
            time.sleep(0.01)
        caught_up = time.perf_counter() - last
        published = total / out_r.recv() if out_r.poll(60) else float("nan")
        result = {"forward": got / max(last - first, 1e-9), "lost": total - got, "caught_up": caught_up,
                  "published": published}
        if reads:
            result.update(_reads(recovery))
        return result
    finally:
        sub.close()
        ctx.term()
        stop.set()
        for p in reversed(procs):
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _reads(recovery: str) -> dict[str, float]:
    """Read one topic from seq 1 and every topic since the start, page by page."""
    start = time.perf_counter()
    seq, topic_count = 1, 0
    while True:
        reply = ask(recovery, {"op": "history", "topic": "bar.60s.AAPL", "from_seq": seq}, timeout=60)
        assert reply is not None and reply["ok"] and reply["complete"]
        topic_count += len(reply["messages"])
        if not reply["more"]:
            break
        seq = reply["messages"][-1][2] + 1
    by_seq = time.perf_counter() - start
    start = time.perf_counter()
    since_ns, all_count = 0, 0
    while True:
        reply = ask(recovery, {"op": "history", "pattern": "bar.", "since_ns": since_ns}, timeout=60)
        assert reply is not None and reply["ok"]
        all_count += len(reply["messages"])
        if not reply["more"]:
            break
        since_ns = reply["next_ns"]
    since = time.perf_counter() - start
    return {"by_seq": topic_count / by_seq, "by_seq_n": topic_count, "since": all_count / since,
            "since_n": all_count}


def _journal_alone(total: int) -> dict[str, float]:
    """Append `total` 150-byte payloads over 100 topics, then open the directory again."""
    tmp = Path(tempfile.mkdtemp(prefix="sch-", dir="/tmp"))
    try:
        journal = HistoryJournal(tmp, run=1, config=HistoryConfig())
        frames = [wire.topic_frame(f"bar.60s.S{i}") for i in range(100)]
        payload = b"x" * 150
        ts = time.time_ns()
        start = time.perf_counter()
        for i in range(total):
            journal.append(frames[i % 100], i // 100 + 1, i // 100 + 1, ts + i, payload)
        journal.close()
        append = time.perf_counter() - start
        size = sum(p.stat().st_size for p in tmp.glob("*.hist"))
        start = time.perf_counter()
        HistoryJournal(tmp, run=1, config=HistoryConfig())  # not closed: as if killed
        indexed = time.perf_counter() - start
        for side in tmp.glob("*.idx"):
            side.unlink()
        start = time.perf_counter()
        HistoryJournal(tmp, run=1, config=HistoryConfig())
        scanned = time.perf_counter() - start
        return {"append": total / append, "open": indexed, "scan": scanned, "mb": size / 1e6}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> list[dict]:
    total = 100_000 if quick else 500_000
    rounds = 1 if quick else 3
    offs, ons = [], []
    for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both alike; the best of each
        offs.append(_one(total, history=False, reads=False))
        ons.append(_one(total, history=True, reads=True))
    alone_n = 100_000 if quick else 1_000_000
    alone = _journal_alone(alone_n)
    off = max(offs, key=lambda r: r["forward"])
    on = max(ons, key=lambda r: r["forward"])
    note = f"{total:,} Bar maps over {len(_SYMBOLS)} topics, best of {rounds}; 1 KiB of memory per topic"
    return [
        {"benchmark": "hub forwarding, output journal off", "value": round(off["forward"]), "unit": "msgs/s",
         "note": f"{note}; lost {off['lost']}; the publisher sent {off['published']:,.0f}/s"},
        {"benchmark": "hub forwarding, output journal on", "value": round(on["forward"]), "unit": "msgs/s",
         "note": f"same run; lost {on['lost']}; the publisher sent {on['published']:,.0f}/s"},
        {"benchmark": "recovery service behind the last message, off", "value": off["caught_up"], "unit": "s",
         "note": "until it holds every bar (capture only)"},
        {"benchmark": "recovery service behind the last message, on", "value": on["caught_up"], "unit": "s",
         "note": "capture and disk writes"},
        {"benchmark": "history from disk by seq", "value": round(on["by_seq"]), "unit": "msgs/s",
         "note": f"{on['by_seq_n']:,} messages of one topic from seq 1, pages of {MAX_REPLY:,} over REQ/REP"},
        {"benchmark": "history from disk since a time", "value": round(on["since"]), "unit": "msgs/s",
         "note": f"{on['since_n']:,} messages of every topic, pages of {MAX_REPLY:,} over REQ/REP"},
        {"benchmark": "output journal append (service thread)", "value": round(alone["append"]), "unit": "msgs/s",
         "note": f"{alone_n:,} messages of 150 bytes over 100 topics, {alone['mb']:.0f} MB"},
        {"benchmark": "output journal opened by a restarted hub", "value": alone["open"], "unit": "s",
         "note": f"those {alone_n:,}, from the closed files' sidecar indexes"},
        {"benchmark": "output journal opened, no sidecar", "value": alone["scan"], "unit": "s",
         "note": f"every record read, CRC-checked and indexed ({alone_n / alone['scan']:,.0f} records/s): "
                 "what a killed hub's last file costs"},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
