"""Ring throughput between two processes, against a one-process numpy memcpy ceiling.

Run: ``python benchmarks/bench_ring.py [--quick]``. The producer and the consumer are
separate spawned processes on the same ring (``block`` policy, so every record arrives);
the consumer checks the count and the last sequence number it received.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import time

import numpy as np
from _table import bench_main

from streamctl.shm.records import RECORD_DTYPE, RECORD_SIZE
from streamctl.shm.ring import Ring
from streamctl.shm.segments import segment_name

__all__ = ["main", "run"]

_CAPACITY = 1 << 16


def _producer(name: str, batch: int, total: int, ready, go) -> None:
    ring = Ring.attach(name)
    ready.release()
    records = np.zeros(batch, dtype=RECORD_DTYPE)
    seq = records["sequence"]
    go.wait(30)
    sent = 0
    while sent < total:
        n = min(batch, total - sent)
        seq[n - 1] = sent + n - 1  # the consumer checks the last sequence it receives
        sent += ring.publish(records[:n], timeout=30)
    ring.close()


def _consumer(name: str, total: int, ready, go, out) -> None:
    ring = Ring.attach(name)
    ready.release()
    buf = np.empty(_CAPACITY, dtype=RECORD_DTYPE)
    got = 0
    last = -1
    go.wait(30)
    start = time.perf_counter()
    deadline = time.monotonic() + 120
    while got < total and time.monotonic() < deadline:
        batch = ring.consume(_CAPACITY, buf)
        if len(batch):
            got += len(batch)
            last = int(batch["sequence"][-1])
        else:
            os.sched_yield()
    out.put((got, last, time.perf_counter() - start))
    ring.close()


def _two_process(batch: int, total: int) -> dict:
    ctx = mp.get_context("spawn")
    name = segment_name(f"bench{os.getpid()}", "ring", str(batch))
    ring = Ring.create(name, _CAPACITY, overflow="block", plant=f"bench{os.getpid()}")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_consumer, args=(name, total, ready, go, results)),
        ctx.Process(target=_producer, args=(name, batch, total, ready, go)),
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:  # both imported and attached: only the transfer is timed
            if not ready.acquire(timeout=60):
                raise RuntimeError("benchmark processes did not start within 60 s")
        go.set()
        got, last, seconds = results.get(timeout=150)
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        ring.close()
        ring.unlink()
    ok = got == total and last == total - 1
    return {"rate": got / seconds, "seconds": seconds, "ok": ok}


def _memcpy(total_bytes: int, chunk: int) -> float:
    """Bytes/s of numpy copying `chunk`-byte slices between two big buffers, one process."""
    size = _CAPACITY * RECORD_SIZE
    # page-aligned anonymous mappings, like the ring's memory (heap buffers reused after a
    # free showed erratic 4-10x slowdowns here), with every page faulted in before timing
    src_map, dst_map = mmap.mmap(-1, size), mmap.mmap(-1, size)
    src = np.frombuffer(src_map, dtype=np.uint8)
    dst = np.frombuffer(dst_map, dtype=np.uint8)
    src[:] = 1
    dst[:] = 0
    n = len(src) // chunk
    start = time.perf_counter()
    done = 0
    while done < total_bytes:
        for i in range(n):
            dst[i * chunk : (i + 1) * chunk] = src[i * chunk : (i + 1) * chunk]
        done += n * chunk
    rate = done / (time.perf_counter() - start)
    del src, dst
    src_map.close()
    dst_map.close()
    return rate


def run(quick: bool = False) -> list[dict]:
    """Rows ``{"benchmark", "value", "unit", "note"}`` for a combined report."""
    total = 2_000_000 if quick else 8_000_000
    repeat = 1 if quick else 3  # best of `repeat`: the machine is shared, noise only slows down
    rows = []
    for batch in (256, 1024, 4096):
        runs = [_two_process(batch, total) for _ in range(repeat)]
        r = max(runs, key=lambda x: x["rate"])
        ok = all(x["ok"] for x in runs)
        note = f"{total:,} records, 2 processes, capacity {_CAPACITY}, block, best of {repeat}" + (
            "" if ok else ", LOSS!"
        )
        rows.append({"benchmark": f"ring batch {batch}", "value": r["rate"] / 1e6, "unit": "M records/s", "note": note})
        rows.append(
            {"benchmark": f"ring batch {batch}", "value": r["rate"] * RECORD_SIZE / 1e9, "unit": "GB/s", "note": note}
        )
    for batch in (256, 1024, 4096):
        bps = max(_memcpy(total * RECORD_SIZE, batch * RECORD_SIZE) for _ in range(repeat))
        note = f"numpy slice copy of {batch}-record chunks, 1 process (ceiling), best of {repeat}"
        rows.append({"benchmark": f"memcpy {batch}", "value": bps / RECORD_SIZE / 1e6, "unit": "M records/s", "note": note})
        rows.append({"benchmark": f"memcpy {batch}", "value": bps / 1e9, "unit": "GB/s", "note": note})
    return rows




def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
