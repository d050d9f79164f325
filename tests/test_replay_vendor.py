"""The replay vendor over the real sample files, through the `FeedSession` face."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import msgspec
import numpy as np
import pytest
from _data import sample

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file
from streamctl.ingest.vendor_api import EndOfInput, SessionError
from streamctl.ingest.vendors import VENDORS
from streamctl.ingest.vendors.replay.options import Options
from streamctl.ingest.vendors.replay.session import Session
from streamctl.shm.records import RECORD_DTYPE, Kind, Side
from streamctl.shm.registry import SymbolRegistry
from streamctl.shm.segments import segment_name

# The sample files (tests/data) as the `str` paths `Options.files` holds.
TRADES = str(sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"))
MBO = str(sample("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"))
DEFINITION = str(sample("nautilus_trader/historical_bars_catalog/futures_definition.dbn.zst"))
LIVE = str(sample("databento-python/LIVE/test_data.live.dbn.zst"))


@dataclass
class Feed:
    """The two fields of `FeedConfig` a session reads."""

    name: str = "replay"
    symbols: list[str] | None = None


@dataclass
class Ctx:
    """A `FeedContext` that records what the session reports; ids come from a real registry."""

    registry: SymbolRegistry
    feed_name: str = "replay"
    counters: dict[str, int] = field(default_factory=dict)
    events: list[tuple[str, str, int | None]] = field(default_factory=list)
    progress_calls: list[tuple[float, float]] = field(default_factory=list)

    def instrument_id(self, symbol: str) -> int:
        return self.registry.id_for(symbol)

    def count(self, cause: str, n: int = 1) -> None:
        self.counters[cause] = self.counters.get(cause, 0) + n

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        self.events.append((kind, message, code))

    def progress(self, done: float, total: float) -> None:
        self.progress_calls.append((done, total))


@pytest.fixture
def ctx():
    name = segment_name(f"t{os.getpid()}", "sym", f"replay{time.monotonic_ns() % 10**9}")
    reg = SymbolRegistry.create(name, 64)
    try:
        yield Ctx(reg)
    finally:
        reg.close()
        reg.unlink()


def run(options: Options, ctx: Ctx, feed: Feed | None = None, *, limit: int | None = None, timeout: float = 0.05,
        failures: list[SessionError] | None = None):
    """Poll until EndOfInput (or `limit` records); every wait bounded by a deadline. With
    `failures`, a `SessionError` also ends the replay and is appended there."""
    session = Session(options, feed or Feed(), ctx)
    session.open()
    out = []
    got = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                batch = session.poll(timeout)
            except EndOfInput:
                break
            except SessionError as exc:
                if failures is None:
                    raise
                failures.append(exc)
                break
            if batch is not None:
                assert batch.dtype == RECORD_DTYPE and 0 < len(batch) <= options.batch
                out.append(batch)
                got += len(batch)
                if limit is not None and got >= limit:
                    break
        else:
            pytest.fail("replay did not finish within 30 s")
        return (np.concatenate(out) if out else np.zeros(0, RECORD_DTYPE)), session
    finally:
        session.close()


def expected(path: str, ids: dict[int, int]) -> np.ndarray:
    dec = DbnDecoder()
    dec.write(read_file(path))
    recs = dec.finish().records
    recs["instrument_id"] = [ids[i] for i in recs["instrument_id"].tolist()]
    return recs


def test_vendor_face():
    spec = VENDORS["replay"]
    assert spec.options is Options and spec.session_type() is Session and not spec.needs_symbols
    opts = msgspec.convert({"files": ["a.dbn"], "speed": 2.5}, Options)
    assert opts.speed == 2.5 and opts.batch == 4096 and opts.format == "auto" and not opts.loop
    with pytest.raises(msgspec.ValidationError, match="files"):
        msgspec.convert({"files": []}, Options)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"files": ["a.dbn"], "sped": 1}, Options)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"files": ["a.dbn"], "speed": 0}, Options)


def test_options_check(tmp_path):
    assert Options(files=["/nope/x.dbn"]).check() == ("files[0]", "does not exist", "/nope/x.dbn")
    odd = tmp_path / "x.txt"
    odd.write_text("")
    field_, message, value = Options(files=[TRADES, str(odd)]).check()
    assert field_ == "files[1]" and "extension" in message and value == str(odd)
    assert Options(files=[str(odd)], format="csv").check() is None


def test_trades_file_exact(ctx):
    path = TRADES
    recs, session = run(Options(files=[path], batch=50), ctx)
    es = ctx.registry.lookup("ESU4")
    assert es is not None and session.instruments() == [es]
    want = expected(path, {118: es})
    assert np.array_equal(recs, want)
    assert len(recs) == 120 and (recs["kind"] == Kind.TRADE).all()
    done, total = ctx.progress_calls[-1]
    assert done == total == os.path.getsize(path)
    assert ctx.counters == {}


def test_mbo_file_book_records(ctx):
    path = MBO
    recs, session = run(Options(files=[path], batch=1000), ctx)
    es = ctx.registry.lookup("ESM4")
    assert np.array_equal(recs, expected(path, {5602: es}))
    assert recs["kind"][0] == Kind.RESET
    assert np.bincount(recs["kind"], minlength=5)[Kind.TRADE] == 5
    assert session.anomalies == {}


def test_several_files_and_symbol_filter(ctx):
    paths = [TRADES, MBO, DEFINITION]
    recs, session = run(Options(files=paths), ctx, Feed(symbols=["ESM4"]))
    esm4 = ctx.registry.lookup("ESM4")
    assert ctx.registry.lookup("ESU4") is None  # filtered out: never registered
    assert (recs["instrument_id"] == esm4).all() and len(recs) == len(expected(paths[1], {5602: esm4}))
    assert session.skipped == {"definition": 2}
    assert any(kind == "skipped" and "definition" in msg for kind, msg, _ in ctx.events)


def test_live_stream_file_uses_mapping_records(ctx):
    path = LIVE
    recs, _ = run(Options(files=[path]), ctx)
    esz4 = ctx.registry.lookup("ESZ4")
    assert esz4 is not None and (recs["instrument_id"] == esz4).all()
    assert np.bincount(recs["kind"], minlength=5)[1:].tolist() == [4, 2, 5, 0]


def test_loop_repeats_identical_records(ctx):
    path = MBO
    one, _ = run(Options(files=[path], batch=3000), ctx)
    looped, session = run(Options(files=[path], batch=3000, loop=True), ctx, limit=3 * len(one))
    assert session.loops >= 2
    for k in range(3):
        assert np.array_equal(looped[k * len(one) : (k + 1) * len(one)], one)


def test_pacing_by_ts_event_waits(ctx):
    path = TRADES
    session = Session(Options(files=[path], speed=1e-6), Feed(), ctx)
    session.open()
    try:
        first = session.poll(0.05)
        assert first is not None and len(first) >= 1
        assert (first["ts_event"] == first["ts_event"][0]).all()  # only the first instant is due
        t0 = time.monotonic()
        assert session.poll(0.02) is None  # the next trade is ~5 s of event time = ~58 days away
        assert time.monotonic() - t0 < 5  # a poll waits at most about its timeout, never forever
    finally:
        session.close()


def test_pacing_fast_speed_replays_everything(ctx):
    path = TRADES
    # 232 s of trades at 2000x real time: about 0.12 s of wall time
    recs, _ = run(Options(files=[path], speed=2000.0), ctx)
    assert len(recs) == 120


def test_snapshot_records_do_not_wait(ctx):
    path = MBO
    session = Session(Options(files=[path], speed=1e-6, batch=20000), Feed(), ctx)
    session.open()
    try:
        first = session.poll(0.05)
        # the clear and the whole snapshot (days older than the live events) come at once
        assert first is not None and len(first) >= 13_602
        assert first["kind"][0] == Kind.RESET
    finally:
        session.close()


def test_corrupt_dbn_counts_malformed_keeps_the_rest(ctx, tmp_path):
    path = TRADES
    data = bytearray(read_file(path))
    off = len(data) - 120 * 48
    data[off + 48 * 60 + 1] = 0x77  # unknown rtype
    data = bytes(data[:-10])  # and a truncated last record
    bad = tmp_path / "bad.dbn"
    bad.write_bytes(data)
    failures: list[SessionError] = []
    recs, _ = run(Options(files=[str(bad)]), ctx, failures=failures)
    assert len(recs) == 118 and ctx.counters["malformed"] == 2
    # ... and the cut last record fails the replay once the complete records are out (issue 8, defect 4)
    assert [str(f) for f in failures] == ["`bad.dbn` truncated: last DBN record cut short (38 bytes); 118 records read"]


def test_bad_metadata_is_a_session_error(ctx, tmp_path):
    bad = tmp_path / "v9.dbn"
    bad.write_bytes(b"DBN\x09" + bytes(300))
    with pytest.raises(SessionError, match="version") as err:
        run(Options(files=[str(bad)]), ctx)
    assert err.value.retry is False


def test_error_records_are_counted(ctx, tmp_path):
    dbn = pytest.importorskip("databento_dbn")
    ts = 1_700_000_000_000_000_000
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=ts, stype_in=None, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=None, symbols=[], version=3)
    err = dbn.ErrorMsg(ts_event=ts, err="Unknown symbol", code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED)
    f = tmp_path / "err.dbn"
    f.write_bytes(meta.encode() + bytes(err))
    recs, _ = run(Options(files=[str(f)]), ctx)
    assert len(recs) == 0 and ctx.counters == {"errors": 1}
    assert ("error", f"`{f}`: Unknown symbol", 4) in ctx.events


# ---- CSV and Parquet


def _trades_frame(path: str):
    pd = pytest.importorskip("pandas")
    dec = DbnDecoder()
    dec.write(read_file(path))
    recs = dec.finish().records
    side = np.array(["N", "B", "A"])[recs["side"]]
    return recs, pd.DataFrame({
        "ts_event": recs["ts_event"], "symbol": "ESU4", "kind": "trade", "price": recs["price"] / 1e9,
        "size": recs["size"], "side": side, "ts_recv": recs["ts_recv"], "sequence": recs["sequence"],
    })


def _same_trades(got: np.ndarray, want: np.ndarray) -> None:
    for name in ("ts_event", "ts_recv", "price", "size", "side", "sequence", "kind"):
        assert np.array_equal(got[name], want[name]), name


def test_csv_replay(ctx, tmp_path):
    path = TRADES
    want, df = _trades_frame(path)
    f = tmp_path / "trades.csv"
    df.to_csv(f, index=False)
    with open(f, "a") as fh:  # three bad rows and a quote with an ISO time
        fh.write("notatime,ESU4,trade,1.0,1,B,0,0\n")
        fh.write("1719878519824330532,ESU4,trade,abc,1,B,0,0\n")
        fh.write("1719878519824330533,ESU4,trade,1.0\n")
        fh.write("2024-07-02T00:01:59.9Z,ESU4,quote,,,,,\n")
    recs, session = run(Options(files=[str(f)]), ctx)
    es = ctx.registry.lookup("ESU4")
    assert (recs["instrument_id"] == es).all() and session.instruments() == [es]
    _same_trades(recs[:120], want)
    assert ctx.counters["malformed"] == 4  # the quote has neither bid nor ask
    assert any(kind == "malformed" and "ts_event 1" in msg for kind, msg, _ in ctx.events)


def test_csv_quotes_and_iso_times(ctx, tmp_path):
    f = tmp_path / "q.csv"
    f.write_text(
        "ts_event,symbol,bid,ask,bid_size,ask_size\n"
        "2024-07-01T23:58:01.218219Z,AAPL,189.5,189.52,100,200\n"
        "2024-07-01T23:58:02+00:00,MSFT,,420.1,,3\n"
    )
    recs, _ = run(Options(files=[str(f)]), ctx)
    assert recs["kind"].tolist() == [Kind.QUOTE, Kind.QUOTE]
    assert recs["ts_event"].tolist() == [1719878281218219000, 1719878282000000000]
    assert recs["price"].tolist() == [189_500_000_000, np.iinfo(np.int64).max]
    assert recs["price2"].tolist() == [189_520_000_000, 420_100_000_000]
    assert recs["size"].tolist() == [100.0, 0.0] and recs["size2"].tolist() == [200.0, 3.0]
    assert ctx.registry.symbols() == {1: "AAPL", 2: "MSFT"}


def test_parquet_replay(ctx, tmp_path):
    pytest.importorskip("pyarrow")
    path = TRADES
    want, df = _trades_frame(path)
    pd = pytest.importorskip("pandas")
    df["ts_event"] = pd.to_datetime(df["ts_event"], unit="ns")
    f = tmp_path / "trades.parquet"
    df.to_parquet(f)
    recs, _ = run(Options(files=[str(f)], batch=7), ctx)
    _same_trades(recs, want)
    assert (recs["side"] != Side.NONE).all()


def test_tabular_missing_column_is_a_session_error(ctx, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("time,symbol,price\n1,A,1\n")
    with pytest.raises(SessionError, match="`ts_event` column"):
        run(Options(files=[str(f)]), ctx)


# ---- files that end early or are empty (issue 8, defect 4): reported, never a quiet short replay


def _cut(tmp_path, source: str, name: str, end: int) -> str:
    data = open(source, "rb").read()
    assert 0 <= end < len(data)
    path = tmp_path / name
    path.write_bytes(data[:end])
    return str(path)


@pytest.mark.parametrize("end", [5, 100, 1076, 2150, 2152], ids=lambda e: f"at{e}")
def test_truncated_zstd_fails_with_records_read(ctx, tmp_path, end):
    path = _cut(tmp_path, TRADES, "cut.dbn.zst", end)  # 2153 bytes: frames of metadata, then records
    failures: list[SessionError] = []
    recs, _ = run(Options(files=[path]), ctx, failures=failures)
    assert len(failures) == 1 and failures[0].retry is False
    message = str(failures[0])
    assert message.startswith("`cut.dbn.zst` truncated: ") and message.endswith(f"; {len(recs)} records read")
    assert "zstd frame cut short" in message or "metadata cut short" in message, message
    assert len(recs) < 120 or end >= 2150  # the last bytes of a frame are its checksum: every record, still cut


def _cut_inside_a_frame(data: bytes) -> bool:
    """zstandard's own verdict, frame by frame: does `data` stop inside a zstd frame?"""
    import zstandard

    frame = None
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        frame.decompress(data)
        if not frame.eof:
            return True
        data = frame.unused_data
    return False


def test_zstd_frame_walk_agrees_with_zstandard_at_every_cut(tmp_path):
    """The header walk that finds a cut frame says what zstandard's decompressor says, at
    every length of a file of several frames (a cut between frames is a shorter valid file)."""
    from streamctl.ingest.vendors.replay.zstd_frames import frames_end_inside

    data = open(TRADES, "rb").read()
    path = tmp_path / "cut.dbn.zst"
    cut = []
    for end in range(len(data) + 1):
        path.write_bytes(data[:end])
        with open(path, "rb") as fh:
            assert frames_end_inside(fh) == _cut_inside_a_frame(data[:end]), end
            assert fh.tell() == 0  # the walk leaves the file where it was
        cut.append(_cut_inside_a_frame(data[:end]))
    assert 0 < cut.count(False) < 10  # the frame boundaries: few, and not every cut


def test_repetitive_zst_is_read_in_bounded_chunks(ctx, tmp_path):
    """A looped sample compresses about 160:1 in one frame; each read still hands out about
    1 MiB of input (before, the first read decompressed the whole file), with the records of
    the plain file."""
    import zstandard

    from streamctl.ingest.formats.dbn.decoder import read_metadata
    from streamctl.ingest.vendors.replay.sources import DbnSource, ReplayState

    data = read_file(MBO)
    _, offset = read_metadata(data)
    looped = data + data[offset:] * 39
    plain = tmp_path / "looped.dbn"
    plain.write_bytes(looped)
    packed = tmp_path / "looped.dbn.zst"
    packed.write_bytes(zstandard.ZstdCompressor(level=3).compress(looped))
    assert len(looped) > 100 * packed.stat().st_size

    def batches(path) -> list[np.ndarray]:
        source = DbnSource(str(path), ctx, ReplayState())
        out = []
        try:
            while (got := source.read()) is not None:
                out.append(got)
        finally:
            source.close()
        return out

    chunks = batches(packed)
    per_read = (1 << 20) // 56  # MBO records in 1 MiB; each becomes one or two records
    assert len(chunks) > len(looped) // (1 << 20) and max(len(c) for c in chunks) <= 2 * per_read + 64
    assert np.array_equal(np.concatenate(chunks), np.concatenate(batches(plain)))


@pytest.mark.parametrize(("end", "what", "n"), [
    (50, "truncated: DBN metadata cut short", 0),
    (-48 * 70 - 5, "truncated: last DBN record cut short (43 bytes)", 49),
    (-1, "truncated: last DBN record cut short (47 bytes)", 119),
], ids=["metadata", "mid", "last-byte"])
def test_truncated_dbn_fails_after_the_complete_records(ctx, tmp_path, end, what, n):
    plain = tmp_path / "plain.dbn"
    plain.write_bytes(read_file(TRADES))
    path = _cut(tmp_path, str(plain), "cut.dbn", end % plain.stat().st_size)
    failures: list[SessionError] = []
    recs, _ = run(Options(files=[path]), ctx, failures=failures)
    assert [str(f) for f in failures] == [f"`cut.dbn` {what}; {n} records read"]
    if n:
        es = ctx.registry.lookup("ESU4")
        assert np.array_equal(recs, expected(str(plain), {118: es})[:n])  # nothing before the cut is lost
    assert len(recs) == n


@pytest.mark.parametrize("name", ["empty.dbn", "empty.dbn.zst", "empty-frame.dbn.zst"])
def test_empty_file_fails(ctx, tmp_path, name):
    import zstandard

    path = tmp_path / name
    path.write_bytes(zstandard.ZstdCompressor().compress(b"") if name.startswith("empty-frame") else b"")
    failures: list[SessionError] = []
    recs, _ = run(Options(files=[str(path)]), ctx, failures=failures)
    assert len(recs) == 0 and [str(f) for f in failures] == [f"`{name}` is empty; 0 records read"]


def test_truncated_second_file_fails_after_the_first(ctx, tmp_path):
    path = _cut(tmp_path, MBO, "cut.dbn.zst", os.path.getsize(MBO) // 2)
    failures: list[SessionError] = []
    recs, _ = run(Options(files=[TRADES, path]), ctx, failures=failures)
    assert len(failures) == 1 and "`cut.dbn.zst` truncated: zstd frame cut short" in str(failures[0])
    assert len(recs) > 120 and str(failures[0]).endswith(f"; {len(recs) - 120} records read")
