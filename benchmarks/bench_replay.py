"""DBN decoding (+ MBO book) into streamctl records, against databento-dbn on the same bytes.

Run: ``python benchmarks/bench_replay.py [--quick]``. Inputs are the real sample files in
``tests/data`` (the MBO file is 13,796 records: a clear, a 13,601-order snapshot and live
events), concatenated N times after one metadata header so the numbers cover millions of
records; every copy starts with its own book clear, so the book stays consistent. Each
figure is the best of a few runs, in input records per second.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from _feedctx import QuietCtx
from _table import bench_main

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file, read_metadata

__all__ = ["main", "run"]

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nautilus_trader"
FILES = {
    "mbo": DATA / "order_book_deltas_catalog" / "orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
    "mbp-1": DATA / "historical_bars_catalog" / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
    "trades": DATA / "historical_bars_catalog" / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
}


def _looped(path: Path, target: int) -> tuple[bytes, int]:
    """Metadata once, then the records repeated until about `target` records; (bytes, count)."""
    data = read_file(path)
    _, offset = read_metadata(data)
    body = data[offset:]
    size = data[offset] * 4
    per_copy = len(body) // size
    copies = max(1, target // per_copy)
    return data[:offset] + body * copies, per_copy * copies


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _ours(data: bytes, chunk: int | None) -> int:
    dec = DbnDecoder()
    out = 0
    if chunk is None:
        dec.write(data)
        return len(dec.finish().records)
    for pos in range(0, len(data), chunk):
        dec.write(data[pos : pos + chunk])
        out += len(dec.decode().records)
    return out + len(dec.finish().records)


def _replay(path: str, batch: int) -> int:
    from streamctl.ingest.vendor_api import EndOfInput
    from streamctl.ingest.vendors.replay.options import Options
    from streamctl.ingest.vendors.replay.session import Session

    session = Session(Options(files=[path], batch=batch), None, QuietCtx())
    session.open()
    n = 0
    try:
        while True:
            got = session.poll(0.1)
            n += 0 if got is None else len(got)
    except EndOfInput:
        pass
    session.close()
    return n


def run(quick: bool = False) -> list[dict]:
    import databento_dbn as dbn

    try:
        import databento as db
    except ImportError:  # the comparison is optional; our rows still run
        db = None
    target = 300_000 if quick else 2_000_000
    repeat = 2 if quick else 3
    rows: list[dict] = []
    for name, path in FILES.items():
        if not path.exists():
            rows.append({"benchmark": name, "value": 0.0, "unit": "-", "note": f"skipped: {path} absent"})
            continue
        data, n = _looped(path, target)
        _ours(data[: len(data) // 50], None)  # warm up (numba cache load)
        what = "decode + MBO book" if name == "mbo" else "decode"
        t = _best(lambda data=data: _ours(data, None), repeat)
        rows.append({"benchmark": f"{name} ours", "value": n / t / 1e6, "unit": "M rec/s",
                     "note": f"{what}, {n:,} records in one write"})
        t = _best(lambda data=data: _ours(data, 1 << 20), repeat)
        rows.append({"benchmark": f"{name} ours 1MiB", "value": n / t / 1e6, "unit": "M rec/s",
                     "note": f"{what}, written 1 MiB at a time (file replay)"})
        t = _best(lambda data=data: _ours(data, 1 << 12), 1)
        rows.append({"benchmark": f"{name} ours 4KiB", "value": n / t / 1e6, "unit": "M rec/s",
                     "note": f"{what}, written 4 KiB at a time (live TCP reads)"})
        if db is not None:
            t = _best(lambda data=data: len(db.DBNStore.from_bytes(data).to_ndarray()), repeat)
            rows.append({"benchmark": f"{name} DBNStore", "value": n / t / 1e6, "unit": "M rec/s",
                         "note": "databento DBNStore.to_ndarray(): decode only, no conversion/book"})
        small = data[: min(len(data), len(data) // max(1, n // 200_000))]
        small_n = (len(small) - read_metadata(data)[1]) // (data[read_metadata(data)[1]] * 4)

        def objects(small=small) -> int:
            dec = dbn.DBNDecoder()
            dec.write(small)
            return len(dec.decode())

        t = _best(objects, repeat)
        rows.append({"benchmark": f"{name} DBNDecoder", "value": small_n / t / 1e6, "unit": "M rec/s",
                     "note": "databento-dbn DBNDecoder().decode(): Python objects, decode only"})
    path = FILES["mbo"]
    if path.exists():
        data, n = _looped(path, target // 2)
        import zstandard

        with tempfile.NamedTemporaryFile(suffix=".dbn.zst", delete=False) as fh:
            fh.write(zstandard.ZstdCompressor(level=3).compress(data))
        try:
            t = _best(lambda: _replay(fh.name, 4096), repeat)
            got = _replay(fh.name, 4096)
            rows.append({"benchmark": "replay session", "value": got / t / 1e6, "unit": "M rec/s",
                         "note": f"replay Session, speed max, batch 4096, .dbn.zst MBO, {got:,} records out"})
        finally:
            os.unlink(fh.name)
    return rows


# The same table printer and argument parsing as every bench_*.py: each is a script run alone
# or by run_all.py, which imports only its `run`.


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
