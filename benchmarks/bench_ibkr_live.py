"""IB TWS API path: tick-by-tick messages decoded per second, ours against `ib_async`, same stream.

The local venue serves the ESU4 MBP-1 sample (120 trades, 2,288 quotes) as tick-by-tick
``AllLast`` and ``BidAsk`` messages. A raw client captures that byte stream once; then both
decoders take the same bytes in the same 64 KiB reads:

- ours: `MarketData.decode` (the `ibkr` session's parsing: the compiled frame scan) into 64-byte records;
- ``ib_async``: its client's own receive path (``Client._onSocketHasData``: framing, decoder,
  wrapper updating the Ticker), the official-grade client's work per message.

Then both connect to the venue (in its own process, looping the file at full speed) and count
what they receive in a fixed time; those rows are bounded by the venue's Python encoder.

    python benchmarks/bench_ibkr_live.py [--quick] [--seconds 3]
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
MBP1 = DATA / "nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
_READ = 1 << 16


def _capture() -> bytes:
    """The venue's tick-by-tick stream (request ids 2: AllLast, 3: BidAsk) for one pass over the file."""
    from streamctl.ingest.vendors.ibkr import protocol as api
    from streamctl.ingest.vendors.ibkr.contracts import request_fields
    from streamctl.ingest.vendors.ibkr.venue import IbkrVenue

    with IbkrVenue([str(MBP1)]) as venue:
        (contract,) = venue.tape.contracts.values()
        with socket.create_connection(("127.0.0.1", venue.port), timeout=10) as sock:
            sock.sendall(api.handshake() + api.encode(api.Out.START_API, 2, 1, ""))
            frames = api.FrameReader()
            got = bytearray()
            while len(frames.messages()) < 1:  # the version reply
                frames.feed(sock.recv(_READ))
            for req_id, kind in ((2, "AllLast"), (3, "BidAsk")):
                sock.sendall(api.encode(api.Out.REQ_TICK_BY_TICK_DATA, req_id, *request_fields(contract), kind, 0, 0))
            (connection,) = venue.connections
            sock.settimeout(0.5)
            while True:
                try:
                    chunk = sock.recv(_READ)
                except TimeoutError:
                    if connection.subscriptions == 2 and connection.caught_up():
                        break
                    continue
                got += chunk
    reader = api.FrameReader()
    reader.feed(bytes(got))
    return b"".join(api.frame(b"\0".join(f) + b"\0") for f in reader.messages() if f[0] == b"99")


def _decode_ours(stream: bytes, repeat: int) -> tuple[int, float]:
    from streamctl.ingest.vendors.ibkr.parsing import MarketData, Subscription

    md = MarketData()
    md.subs[2] = Subscription(1, "trades")
    md.subs[3] = Subscription(1, "quotes")
    others: list[list[bytes]] = []
    pending = bytearray()
    n = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for at in range(0, len(stream), _READ):  # as `Session.poll`: append the read, decode whole frames
            pending += stream[at:at + _READ]
            scanned = md.decode(pending, others.append)
            del pending[:scanned.consumed]
            n += len(md.take(time.time_ns()))
    assert not others
    return n, time.perf_counter() - start


def _decode_ib_async(stream: bytes, repeat: int) -> tuple[int, float]:
    from ib_async import IB, Future

    ib = IB()
    client = ib.client
    client._serverVersion = 178
    client.decoder.serverVersion = 178
    client._apiReady = True
    client.connState = client.CONNECTED
    contract = Future(conId=1, symbol="ES", localSymbol="ESU4", exchange="CME")
    ticker = ib.wrapper.startTicker(2, contract, "AllLast")
    ib.wrapper.startTicker(3, contract, "BidAsk")
    count = [0]

    def on_data() -> None:  # what a user's handler sees per read: the ticks of that read
        count[0] += len(ticker.tickByTicks)

    client._tcpDataProcessed = on_data  # ib_async calls it after each read's messages
    start = time.perf_counter()
    for _ in range(repeat):
        for at in range(0, len(stream), _READ):
            client._onSocketHasData(stream[at:at + _READ])
    return count[0], time.perf_counter() - start


def _serve(port: int, ready, stop) -> None:
    from streamctl.ingest.vendors.ibkr.venue import IbkrVenue

    with IbkrVenue([str(MBP1)], port=port, loop=True):
        ready.set()
        stop.wait(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _live_ours(port: int, seconds: float) -> tuple[int, float]:
    from streamctl.ingest.vendors.ibkr.options import Options
    from streamctl.ingest.vendors.ibkr.session import Session

    session = Session(msgspec.convert({"port": port}, Options), SimpleNamespace(symbols=["ESU4"]), QuietCtx())
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


def _live_ib_async(port: int, seconds: float) -> tuple[int, float]:
    from ib_async import IB, Future

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=2, timeout=10)
    count = [0]
    try:
        (details,) = ib.reqContractDetails(Future(localSymbol="ESU4", exchange="CME"))
        ib.pendingTickersEvent += lambda tickers: count.__setitem__(0, count[0] + sum(len(t.tickByTicks)
                                                                                      for t in tickers))
        ib.reqTickByTickData(details.contract, "AllLast")
        ib.reqTickByTickData(details.contract, "BidAsk")
        start = time.perf_counter()
        ib.sleep(seconds)
        return count[0], time.perf_counter() - start
    finally:
        ib.disconnect()


def run(quick: bool = False, seconds: float = 3.0) -> list[dict]:
    seconds = 1.0 if quick else seconds
    from streamctl.ingest.vendors.ibkr.kernels import warm_up

    warm_up()  # numba compiles on first use only (the plant's forkserver does this before feeds start)
    stream = _capture()
    repeat = 10 if quick else 50
    rows = []
    for name, decode in (("streamctl MarketData.decode", _decode_ours),
                         ("ib_async Client._onSocketHasData", _decode_ib_async)):
        n, elapsed = decode(stream, repeat)
        rows.append({"benchmark": f"ibkr decode: {name}", "value": n / elapsed, "unit": "ticks/s",
                     "note": f"{n:,} ticks in {elapsed:.2f} s ({repeat} x the venue's {len(stream):,}-byte stream)"})
    ctx = mp.get_context("spawn")
    for name, client in (("streamctl Session", _live_ours), ("ib_async IB", _live_ib_async)):
        port = _free_port()
        ready, stop = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_serve, args=(port, ready, stop))
        proc.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("venue did not start")
            n, elapsed = client(port, seconds)
        finally:
            stop.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        rows.append({"benchmark": f"ibkr live: {name}", "value": n / elapsed, "unit": "ticks/s",
                     "note": f"{n:,} ticks in {elapsed:.2f} s from the looping venue (bounded by its encoder)"})
    return rows


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per live row")


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv, _options)


if __name__ == "__main__":
    raise SystemExit(main())
