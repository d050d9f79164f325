"""The recovery service's CPU per message the hub forwards, and what its parts cost.

Run: ``python benchmarks/bench_recovery.py [--quick]``. A proxy and its recovery service (with
the output journal) run in this process, as in a hub; a spawned publisher sends 12 messages
every millisecond (trade arrays and bar maps over 5 symbols, about what a plant forwards at
10 k trades/s) to the proxy with no subscriber. The service thread's CPU time (from /proc) over
the messages it stored, once waking per proxy burst (``gather_s=0``, as before the gathering)
and once with the default gathering, in the same run. Then its parts alone, each beside what
it replaced: taking queued messages with `recv_multipart` one at a time or with the compiled
loop (`streamctl.bus.native_recv`), and the output journal's `append` per message or
`append_many` per take.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

import msgspec
import zmq
from _table import bench_main

from streamctl.bus import wire
from streamctl.bus.history import HistoryConfig, HistoryJournal
from streamctl.bus.native_recv import NativeReceiver, warm_up
from streamctl.bus.proxy import Proxy
from streamctl.bus.recovery import GATHER_S, RecoveryService, ask, service_binds

__all__ = ["main", "run"]

_CTX = mp.get_context("spawn")
_SYMBOLS = ["S00", "S01", "S02", "S03", "S04"]
_BURST = 12
_TCK = os.sysconf("SC_CLK_TCK")


def _messages(count: int) -> list[tuple[bytes, bytes]]:
    """Half one-trade arrays, half bar maps, over the symbols; seqs from 1 per topic."""
    encode = msgspec.msgpack.Encoder().encode
    seqs: dict[str, int] = {}
    out = []
    for i in range(count):
        symbol = _SYMBOLS[i % len(_SYMBOLS)]
        topic = f"trade.{symbol}" if i % 2 else f"bar.1s.{symbol}"
        seq = seqs[topic] = seqs.get(topic, 0) + 1
        if i % 2:
            payload = encode([wire.Trade(seq=seq, src="bench", symbol=symbol, ts_event=i, ts_recv=i, price=100.0,
                                         size=1.0, side="B")])
        else:
            payload = encode(wire.Bar(seq=seq, src="bench", symbol=symbol, interval="1s", ts_start=i, ts_end=i + 1,
                                      open=1.0, high=1.5, low=0.5, close=1.0, volume=10.0, trades=3, vwap=1.0,
                                      ts_event=i, ts_recv=i))
        out.append((wire.topic_frame(topic), payload))
    return out


def _publisher(endpoint: str, count: int, go) -> None:
    """Spawned: once `go`, `_BURST` messages every millisecond until `count` are sent."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.sndhwm = 0
    sock.connect(endpoint)
    messages = _messages(count)
    go.wait()
    due = time.perf_counter()
    for k in range(0, count, _BURST):
        for message in messages[k:k + _BURST]:
            sock.send_multipart(message)
        due += 0.001
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    sock.close(linger=60_000)
    ctx.term()


def _thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


def _live(count: int, gather_s: float) -> dict[str, float]:
    """The service thread's CPU seconds per message stored, and its wake-ups per second."""
    tmp = tempfile.mkdtemp(prefix="scr-", dir="/tmp")
    proxy = Proxy(frontend=f"ipc://{tmp}/f.ipc", backend="tcp://127.0.0.1:*", sndhwm=1_000_000,
                  capture="inproc://bench-recovery")
    proxy.start()
    assert proxy.context is not None and proxy.frontend_endpoint is not None
    recovery = f"ipc://{tmp}/rec.ipc"
    service = RecoveryService(proxy.context, capture="inproc://bench-recovery", topic_bytes=4 << 20,
                              history=HistoryConfig(), history_dir=f"{tmp}/history", run=1, gather_s=gather_s,
                              binds=service_binds(internal=proxy.frontend_endpoint, public=recovery,
                                                  internal_curve=None, public_curve=None))
    service.start()
    go = _CTX.Event()
    pub = _CTX.Process(target=_publisher, args=(proxy.frontend_endpoint, count, go), daemon=True)
    pub.start()
    try:
        time.sleep(1.0)  # the publisher's connection and the service's first take (the compiled loop loads)
        assert service._thread is not None and service._thread.native_id is not None
        tid = service._thread.native_id
        want = _want(count)
        before, wakes_before, start = _thread_cpu(tid), _switches(tid), time.perf_counter()
        go.set()
        deadline = time.monotonic() + 120 + count / 1000
        while (ask(recovery, {"op": "seqs", "src": "bench"}, timeout=30) or {}).get("seqs") != want:
            if time.monotonic() > deadline:
                raise RuntimeError("the recovery service never held every message")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        return {"cpu": (_thread_cpu(tid) - before) / count, "wakes": (_switches(tid) - wakes_before) / elapsed,
                "rate": count / elapsed}
    finally:
        pub.join(60)
        if pub.is_alive():
            pub.kill()
        service.stop()
        proxy.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _want(count: int) -> dict[str, int]:
    seqs: dict[str, int] = {}
    for i in range(count):
        symbol = _SYMBOLS[i % len(_SYMBOLS)]
        topic = f"trade.{symbol}" if i % 2 else f"bar.1s.{symbol}"
        seqs[topic] = seqs.get(topic, 0) + 1
    return seqs


def _switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as status:
        return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)


def _receive(count: int) -> dict[str, float]:
    """CPU seconds per message taking `count` queued messages: recv_multipart, then the loop."""
    warm_up()
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.sndhwm = b.rcvhwm = 0
    a.bind("inproc://bench-receive")
    b.connect("inproc://bench-receive")
    messages = _messages(count)
    result = {}
    try:
        for name in ("recv_multipart", "native"):
            for message in messages:
                a.send_multipart(message)
            start = time.thread_time()
            if name == "native":
                got = sum(1 for _ in NativeReceiver(b).messages())
            else:
                got = 0
                while b.poll(0):
                    b.recv_multipart(zmq.NOBLOCK)
                    got += 1
            result[name] = (time.thread_time() - start) / count
            assert got == count
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
    return result


def _journal(count: int, take: int) -> dict[str, float]:
    """CPU seconds per message appending `count` messages: one call each, then `take` per call."""
    messages = _messages(count)
    ts = time.time_ns()
    records = [(frame, i + 1, i + 1, ts + i, payload) for i, (frame, payload) in enumerate(messages)]
    result = {}
    for name in ("append", "append_many"):
        tmp = Path(tempfile.mkdtemp(prefix="scr-", dir="/tmp"))
        try:
            journal = HistoryJournal(tmp, run=1, config=HistoryConfig())
            start = time.thread_time()
            for k in range(0, count, take):
                if name == "append":
                    for record in records[k:k + take]:
                        journal.append(*record)
                else:
                    journal.append_many(records[k:k + take])
                journal.flush()
            result[name] = (time.thread_time() - start) / count
            journal.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def run(quick: bool = False) -> list[dict]:
    count = 24_000 if quick else 96_000
    rounds = 1 if quick else 3
    per_burst, gathered = [], []
    for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both alike; the best of each
        per_burst.append(_live(count, 0.0))
        gathered.append(_live(count, GATHER_S))
    old = min(per_burst, key=lambda r: r["cpu"])
    new = min(gathered, key=lambda r: r["cpu"])
    receive = _receive(count)
    journal = _journal(count, 60)
    note = (f"{count:,} messages, {_BURST} per ms ({old['rate']:,.0f}/s), half trade arrays, half bar maps, "
            f"output journal on; best of {rounds}")
    return [
        {"benchmark": "recovery thread CPU per message, waking per burst", "value": old["cpu"] * 1e6,
         "unit": "us", "note": f"{note}; gather_s 0; {old['wakes']:,.0f} context switches/s"},
        {"benchmark": "recovery thread CPU per message, gathering", "value": new["cpu"] * 1e6, "unit": "us",
         "note": f"same run; gather_s {GATHER_S}; {new['wakes']:,.0f} context switches/s"},
        {"benchmark": "take queued messages, recv_multipart", "value": receive["recv_multipart"] * 1e6,
         "unit": "us/msg", "note": f"{count:,} queued on inproc, one Python call each"},
        {"benchmark": "take queued messages, compiled loop", "value": receive["native"] * 1e6, "unit": "us/msg",
         "note": "same messages; NativeReceiver.messages (drain and cut into bytes)"},
        {"benchmark": "output journal, append per message", "value": journal["append"] * 1e6, "unit": "us/msg",
         "note": f"{count:,} messages, a flush per 60"},
        {"benchmark": "output journal, append_many per take", "value": journal["append_many"] * 1e6,
         "unit": "us/msg", "note": "same messages, 60 per call"},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
