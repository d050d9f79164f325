"""Alpaca stream: messages per second decoded by our session and by alpaca-py, in one run.

Decode rows: the venue's own frames (256 trades/quotes of a real sample file each, as it sends
them) decoded in this process: ours (`FrameDecoder`: frame -> 64-byte records) and alpaca-py's
path (``msgpack.unpackb`` then `StockDataStream._cast`, its frame -> pydantic model step).
Loopback rows: the venue serves the file in a loop at full speed from its own process (with
permessage-deflate, as Alpaca's SDKs negotiate) and a client reads for a fixed time: our
`Session` (MessagePack and JSON) and alpaca-py's `StockDataStream` (MessagePack, one awaited
handler call a message). On a shared 2-core machine the loopback rows include the venue's cost.

    python benchmarks/bench_alpaca_live.py [--quick] [--seconds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
from _feedctx import QuietCtx
from _table import bench_main

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
FILE = "nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
SYMBOL = "ESU4"
KEY, SECRET = "PKBENCH", "bench-secret"


def _venue_process(path: str, port, stop) -> None:
    """Serve `path` in a loop until `stop`; the port it bound goes into `port` (0 until then)."""
    from streamctl.ingest.vendors.alpaca.venue import AlpacaVenue

    with AlpacaVenue([path], loop=True) as venue:
        port.value = venue.port
        stop.wait(300)


def _ours(encoding: str):
    def client(port: int, seconds: float) -> tuple[int, float]:
        from streamctl.ingest.vendors.alpaca.options import Options
        from streamctl.ingest.vendors.alpaca.session import Session

        opt = msgspec.convert({"key": KEY, "secret": SECRET, "url": f"ws://127.0.0.1:{port}", "encoding": encoding},
                              Options)
        session = Session(opt, SimpleNamespace(symbols=[SYMBOL]), QuietCtx())
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

    return client


def official(port: int, seconds: float) -> tuple[int, float]:
    from alpaca.data.live import StockDataStream

    stream = StockDataStream(KEY, SECRET, url_override=f"ws://127.0.0.1:{port}/v2/iex")
    count = [0]
    first = threading.Event()

    async def on_message(_message) -> None:
        count[0] += 1
        first.set()

    stream.subscribe_trades(on_message, SYMBOL)
    stream.subscribe_quotes(on_message, SYMBOL)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    if not first.wait(30):
        raise RuntimeError("alpaca-py received nothing")
    start, begun = time.perf_counter(), count[0]
    time.sleep(seconds)
    n, elapsed = count[0] - begun, time.perf_counter() - start
    stream.stop()
    thread.join(15)
    return n, elapsed


def _frames(encoding: str) -> list:
    from streamctl.ingest.vendors.alpaca.venue.stream import load_stream

    stream = load_stream([str(DATA / FILE)])
    items = [item for item in stream.items if item.tag != "b"]
    frames = [stream.frame(items[i:i + 256], "stocks", encoding) for i in range(0, len(items), 256)]
    return [f.decode() for f in frames] if encoding == "json" else frames


def _rate(decode, frames: list, seconds: float) -> tuple[int, float]:
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for frame in frames:
            n += decode(frame)
    return n, elapsed


def decode_rows(seconds: float) -> list[dict]:
    import msgpack
    from alpaca.data.live import StockDataStream

    from streamctl.ingest.vendors.alpaca.parsing import FrameDecoder

    rows = []
    for encoding in ("msgpack", "json"):
        decoder = FrameDecoder(encoding, lambda symbol: 1)
        n, elapsed = _rate(lambda f, d=decoder: len(d.decode(f, 0).records), _frames(encoding), seconds)
        rows.append({"benchmark": f"alpaca decode: streamctl FrameDecoder ({encoding})", "value": n / elapsed,
                     "unit": "messages/s", "note": f"{n:,} messages -> records in {elapsed:.2f} s"})
    stream = StockDataStream(KEY, SECRET)

    def official_decode(frame: bytes) -> int:
        messages = msgpack.unpackb(frame)
        for message in messages:
            stream._cast(message)
        return len(messages)

    n, elapsed = _rate(official_decode, _frames("msgpack"), seconds)
    rows.append({"benchmark": "alpaca decode: alpaca-py unpackb + _cast (msgpack)", "value": n / elapsed,
                 "unit": "messages/s", "note": f"{n:,} messages -> Trade/Quote models in {elapsed:.2f} s"})
    return rows


def run(quick: bool = False, seconds: float = 3.0) -> list[dict]:
    seconds = 1.0 if quick else seconds
    ctx = mp.get_context("spawn")
    rows = decode_rows(seconds)
    for name, client in (("streamctl Session (msgpack)", _ours("msgpack")), ("streamctl Session (json)", _ours("json")),
                         ("alpaca-py StockDataStream (msgpack)", official)):
        port, stop = ctx.Value("i", 0), ctx.Event()
        proc = ctx.Process(target=_venue_process, args=(str(DATA / FILE), port, stop))
        proc.start()
        try:
            deadline = time.monotonic() + 120
            while not port.value and proc.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not port.value:
                raise RuntimeError("venue did not start")
            n, elapsed = client(port.value, seconds)
        finally:
            stop.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        rows.append({"benchmark": f"alpaca loopback: {name}", "value": n / elapsed, "unit": "messages/s",
                     "note": f"{n:,} messages in {elapsed:.2f} s from the local venue"})
    return rows


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per row")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
