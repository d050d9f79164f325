"""Databento live path over loopback: local gateway (venue) -> client, records per second.

The venue serves a real sample file in a loop at full speed; a client decodes for a fixed
time. Rows: our `Session` (DBN -> 64-byte records, ids mapped) and Databento's own `Live`
client (DBN -> Python record objects, one callback each) for comparison. The venue runs in
its own process so the client's process has a core of its own (2-core machine).

    python benchmarks/bench_databento_live.py [--quick] [--seconds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
from _feedctx import QuietCtx
from _table import bench_main

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
KEY = "db-" + "A" * 27 + "ABCDE"
FILES = {
    "mbp-1": ("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst", "ESU4"),
    "mbo": ("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
            "ESM4"),
}


def _serve(path: str, port: int, ready, stop) -> None:
    from streamctl.ingest.vendors.databento.venue import DatabentoVenue

    venue = DatabentoVenue([path], port=port, loop=True)
    venue.start()
    ready.set()
    stop.wait(120)
    venue.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ours(port: int, schema: str, symbol: str, seconds: float) -> tuple[int, float]:
    from streamctl.ingest.vendors.databento.options import Options
    from streamctl.ingest.vendors.databento.session import Session

    opt = msgspec.convert({"dataset": "GLBX.MDP3", "schemas": [schema], "key": KEY, "gateway": "127.0.0.1",
                           "port": port}, Options)
    session = Session(opt, SimpleNamespace(symbols=[symbol]), QuietCtx())
    session.open()
    n = 0
    start = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - start) < seconds:
            batch = session.poll(0.05)
            if batch is not None:
                n += len(batch)
    finally:
        session.close()
    return n, elapsed


def official(port: int, schema: str, symbol: str, seconds: float) -> tuple[int, float]:
    import databento as db

    client = db.Live(key=KEY, gateway="127.0.0.1", port=port)
    client.subscribe(dataset="GLBX.MDP3", schema=schema, symbols=symbol)
    count = [0]

    def on_record(record) -> None:
        count[0] += 1

    client.add_callback(on_record)
    start = time.perf_counter()
    client.start()
    time.sleep(seconds)
    n, elapsed = count[0], time.perf_counter() - start
    client.terminate()
    return n, elapsed


def _warm_up() -> None:
    """Decode each file once, so numba compilation (first use only) is not timed."""
    from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file

    for rel, _symbol in FILES.values():
        if (DATA / rel).exists():
            decoder = DbnDecoder()
            decoder.write(read_file(DATA / rel))
            decoder.finish()


def run(quick: bool = False, seconds: float = 3.0) -> list[dict]:
    seconds = 1.0 if quick else seconds
    _warm_up()
    ctx = mp.get_context("spawn")
    rows = []
    for schema, (rel, symbol) in FILES.items():
        path = DATA / rel
        for name, client in (("streamctl Session", ours), ("databento.Live", official)):
            port = _free_port()
            ready, stop = ctx.Event(), ctx.Event()
            proc = ctx.Process(target=_serve, args=(str(path), port, ready, stop))
            proc.start()
            try:
                if not ready.wait(60):
                    raise RuntimeError("venue did not start")
                n, elapsed = client(port, schema, symbol, seconds)
            finally:
                stop.set()
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
            rows.append({"benchmark": f"live {schema}: {name}", "value": n / elapsed, "unit": "records/s",
                         "note": f"{n:,} records in {elapsed:.2f} s from the local gateway"
                                 + (" (ours counts output records: a T gives a trade and a quote)"
                                    if schema == "mbp-1" and name.startswith("streamctl") else "")})
    return rows


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per row")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
