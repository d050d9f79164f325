"""DBN decoding against the reference (databento / databento-dbn) on the real sample files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from _data import DATA, sample

from streamctl.ingest.formats.dbn.constants import RECORD_SIZES
from streamctl.ingest.formats.dbn.decoder import (
    DbnDecoder,
    DbnError,
    InstrumentMap,
    metadata_symbols,
    read_file,
    read_metadata,
)
from streamctl.ingest.formats.dbn.mbo_book import MboBook
from streamctl.shm.records import RECORD_DTYPE, UNDEF_PRICE, Kind, Side

db = pytest.importorskip("databento")
dbn = pytest.importorskip("databento_dbn")

TRADES_V1 = sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
MBP1_V1 = sample("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
MBO_V1 = sample("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst")
LIVE = sample("databento-python/LIVE/test_data.live.dbn.zst")
SMALL = sorted(
    [*(DATA / "databento-dbn").glob("*.dbn*"), *(DATA / "databento-python").glob("[GX]*/*.dbn.zst")]
)


def decode(data: bytes, chunks: list[int] | None = None, **kw) -> tuple[DbnDecoder, object]:
    dec = DbnDecoder(**kw)
    if chunks is None:
        dec.write(data)
        return dec, dec.finish()
    out = None
    pos = 0
    for size in chunks:
        dec.write(data[pos : pos + size])
        pos += size
        batch = dec.decode()
        out = batch if out is None else out.merge(batch)
    dec.write(data[pos:])
    last = dec.finish()
    return dec, last if out is None else out.merge(last)


# ---- reference conversion built from databento's own decoding, with plain Python dicts

_SIDE = {"B": Side.BID, "A": Side.ASK, "N": Side.NONE}


def _rec(r, kind, price, size, side, price2=0, size2=0.0, flags=None):
    flags = r.flags if flags is None else flags
    return (r.ts_event, r.ts_recv, price, price2, float(size), float(size2), r.sequence, r.instrument_id,
            int(kind), int(side), flags & 0xA8, 0)


class RefBook:
    """Databento's MBO semantics with dicts: orders by id, level totals by (side, price)."""

    def __init__(self):
        self.orders: dict[tuple[int, int], list] = {}
        self.levels: dict[tuple[int, int, int], int] = {}

    def _level(self, iid, side, price, delta):
        key = (iid, side, price)
        total = self.levels.get(key, 0) + delta
        assert total >= 0, "a level went negative"
        if total:
            self.levels[key] = total
        else:
            self.levels.pop(key, None)
        return total

    def apply(self, r, out):
        a, s = r.action.value, _SIDE[r.side.value]
        key = (r.instrument_id, r.order_id)
        if a == "T":
            out.append(_rec(r, Kind.TRADE, r.price, r.size, s))
        elif a == "R":
            self.orders = {k: v for k, v in self.orders.items() if k[0] != r.instrument_id}
            self.levels = {k: v for k, v in self.levels.items() if k[0] != r.instrument_id}
            out.append(_rec(r, Kind.RESET, 0, 0, Side.NONE))
        elif a == "A" or (a == "M" and key not in self.orders):
            self.orders[key] = [s, r.price, r.size]
            out.append(_rec(r, Kind.BOOK, r.price, self._level(r.instrument_id, s, r.price, r.size), s))
        elif a == "C":
            if key not in self.orders:  # joined without a snapshot: nothing to cancel
                return
            o = self.orders[key]
            o[2] -= r.size
            if o[2] == 0:
                del self.orders[key]
            out.append(_rec(r, Kind.BOOK, o[1], self._level(r.instrument_id, o[0], o[1], -r.size), o[0]))
        elif a == "M":
            o = self.orders[key]
            if o[0] == s and o[1] == r.price:
                total = self._level(r.instrument_id, s, r.price, r.size - o[2])
                out.append(_rec(r, Kind.BOOK, r.price, total, s))
            else:
                total = self._level(r.instrument_id, o[0], o[1], -o[2])
                out.append(_rec(r, Kind.BOOK, o[1], total, o[0], flags=r.flags & ~0x80))
                out.append(_rec(r, Kind.BOOK, r.price, self._level(r.instrument_id, s, r.price, r.size), s))
            o[:] = [s, r.price, r.size]
            if r.size == 0:
                del self.orders[key]

    def top(self, iid, side, depth=5):
        px = sorted((p for (i, s, p) in self.levels if i == iid and s == side), reverse=side == Side.BID)
        return [(p, self.levels[(iid, side, p)]) for p in px[:depth]]


def reference(path: Path) -> tuple[np.ndarray, RefBook, dict]:
    store = db.DBNStore.from_file(path)
    tbbo = store.metadata.schema == dbn.Schema.TBBO
    out: list[tuple] = []
    book = RefBook()
    counts: dict[str, int] = {}
    for r in store:
        name = type(r).__name__
        counts[name] = counts.get(name, 0) + 1
        if isinstance(r, dbn.TradeMsg):
            if r.action.value == "T":
                out.append(_rec(r, Kind.TRADE, r.price, r.size, _SIDE[r.side.value]))
        elif isinstance(r, dbn.MBP1Msg):
            lv = r.levels[0]
            quote = _rec(r, Kind.QUOTE, lv.bid_px, lv.bid_sz, Side.NONE, lv.ask_px, lv.ask_sz)
            trade = [_rec(r, Kind.TRADE, r.price, r.size, _SIDE[r.side.value])] if r.action.value == "T" else []
            out.extend([quote, *trade] if tbbo else [*trade, quote])
        elif isinstance(r, dbn.MBOMsg):
            book.apply(r, out)
    return np.array(out, dtype=RECORD_DTYPE), book, counts


def assert_records_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    for name in RECORD_DTYPE.names:
        assert np.array_equal(got[name], want[name]), f"field `{name}` differs"


# ---- tests


@pytest.mark.parametrize("path", [TRADES_V1, MBP1_V1, MBO_V1, *SMALL], ids=lambda p: p.name)
def test_decoding_equals_reference(path):
    want, _, _ = reference(path)
    dec, batch = decode(read_file(path))
    assert batch.malformed == 0 and batch.skipped == {}
    assert_records_equal(batch.records, want)


def test_v1_trades_file():
    _, batch = decode(read_file(TRADES_V1))
    recs = batch.records
    assert len(recs) == 120 and (recs["kind"] == Kind.TRADE).all()
    assert np.bincount(recs["side"], minlength=3).tolist() == [0, 66, 54]
    assert recs["price"].min() == 5528_500_000_000 and recs["price"].max() == 5529_500_000_000


def test_mbp1_trades_equal_trades_file():
    _, trades = decode(read_file(TRADES_V1))
    _, mbp = decode(read_file(MBP1_V1))
    t = mbp.records[mbp.records["kind"] == Kind.TRADE]
    assert len(t) == 120
    # each T record gives a TRADE immediately followed by its QUOTE
    idx = np.flatnonzero(mbp.records["kind"] == Kind.TRADE)
    assert (mbp.records["kind"][idx + 1] == Kind.QUOTE).all()
    assert (mbp.records["kind"] == Kind.QUOTE).sum() == 2288
    for name in ("ts_event", "price", "size", "side", "sequence"):
        assert np.array_equal(t[name], trades.records[name]), name


def test_mbo_book_matches_reference_book():
    path = MBO_V1
    _, ref_book, counts = reference(path)
    assert counts == {"MBOMsg": 13_796}
    dec, batch = decode(read_file(path))
    kinds = np.bincount(batch.records["kind"], minlength=5)
    assert kinds[Kind.TRADE] == 5 and kinds[Kind.RESET] == 1
    assert batch.anomalies == {}
    book: MboBook = dec.book
    iid = 5602
    for side in (Side.BID, Side.ASK):
        levels = book.levels_of(iid, side)
        assert levels[:10] == ref_book.top(iid, side, 10)
        assert len(levels) == len([k for k in ref_book.levels if k[1] == side])
    assert book.orders == len(ref_book.orders)
    best_bid, best_ask = book.levels_of(iid, Side.BID)[0][0], book.levels_of(iid, Side.ASK)[0][0]
    assert best_bid < best_ask  # the rebuilt book is not crossed
    assert (batch.records["size"][batch.records["kind"] == Kind.BOOK] >= 0).all()


def test_metadata_equals_reference():
    for path in [TRADES_V1, MBO_V1, LIVE, *SMALL]:
        meta, offset = read_metadata(read_file(path))
        ref = db.DBNStore.from_file(path).metadata
        assert meta.version == ref.version
        assert meta.dataset == ref.dataset
        assert meta.start == ref.start and meta.end == ref.end and meta.limit == (ref.limit or 0)
        assert meta.ts_out == ref.ts_out and meta.symbol_cstr_len == ref.symbol_cstr_len
        assert meta.symbols == list(ref.symbols)
        assert (meta.schema is None) == (ref.schema is None)
        assert (meta.stype_in is None) == (ref.stype_in is None)
        assert {raw: [iv[2] for iv in ivs] for raw, ivs in meta.mappings} == {
            raw: [iv["symbol"] for iv in ivs] for raw, ivs in ref.mappings.items()
        }
        assert offset > 8
    meta, _ = read_metadata(read_file(MBO_V1))
    assert meta.schema_name == "mbo" and metadata_symbols(meta) == {5602: "ESM4"}
    assert meta.mappings == [("ESM4", [(20240508, 20240509, "5602")])]


def test_live_stream_mixed_nothing_lost():
    path = LIVE
    want, _, counts = reference(path)
    dec, batch = decode(read_file(path))
    assert dec.metadata.schema is None and dec.metadata.stype_in is None
    assert_records_equal(batch.records, want)
    assert set(batch.mappings) == {(183748, "ESZ4")} and len(batch.mappings) == counts["SymbolMappingMsg"]
    assert batch.skipped == {"ohlcv": 4, "statistics": 9, "definition": 2, "mbp-10": 2}
    assert batch.malformed == 0
    converted = counts["TradeMsg"] + counts["MBP1Msg"] + counts["MBOMsg"]
    accounted = converted + sum(batch.skipped.values()) + len(batch.mappings) + len(batch.system) + len(batch.errors)
    assert accounted == sum(counts.values()) == 46


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("path", [LIVE, MBO_V1, MBP1_V1, TRADES_V1], ids=lambda p: p.name[:20])
def test_incremental_random_chunks_identical(path, seed):
    data = read_file(path)
    _, whole = decode(data)
    rng = random.Random(seed)
    chunks = []
    left = len(data)
    while left > 0:
        size = min(left, rng.choice([1, 2, 3, 7, 16, 55, 100, 333, 4096]))
        chunks.append(size)
        left -= size
    _, pieces = decode(data, chunks)
    assert_records_equal(pieces.records, whole.records)
    assert pieces.mappings == whole.mappings and pieces.system == whole.system
    assert pieces.skipped == whole.skipped and pieces.malformed == whole.malformed == 0
    assert pieces.consumed == len(data)


def test_pending_keeps_partial_record():
    data = read_file(TRADES_V1)
    _, offset = read_metadata(data)
    dec = DbnDecoder()
    dec.write(data[: offset + 48 * 3 + 20])
    batch = dec.decode()
    assert len(batch.records) == 3 and dec.pending == 20
    dec.write(data[offset + 48 * 3 + 20 :])
    assert len(dec.decode().records) == 117 and dec.pending == 0


def test_ts_recv_now_is_ingest_time():
    import time

    before = time.time_ns()
    _, batch = decode(read_file(TRADES_V1), ts_recv="now")
    assert (batch.records["ts_recv"] >= before).all()
    assert (batch.records["ts_recv"] > batch.records["ts_event"]).all()


# ---- streams built with databento-dbn: v1 control records, ts_out, tbbo ordering

TS = 1_700_000_000_000_000_000


def _meta(version=3, ts_out=False, schema=None):
    return dbn.Metadata(dataset="GLBX.MDP3", start=TS, stype_in=None, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=schema, symbols=[], version=version, ts_out=ts_out).encode()


def _trade(i=0):
    return dbn.TradeMsg(publisher_id=1, instrument_id=42, ts_event=TS + i, price=4_500_250_000_000 + i, size=3,
                        action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0, ts_recv=TS + 1000 + i,
                        flags=dbn.F_LAST, ts_in_delta=500, sequence=7 + i)


def test_v1_control_records():
    v1 = dbn.v1
    recs = [
        v1.SymbolMappingMsg(publisher_id=0, instrument_id=42, ts_event=TS, stype_in_symbol="ES.FUT",
                            stype_out_symbol="ESZ3", start_ts=TS, end_ts=TS + 1),
        v1.SystemMsg(ts_event=TS, msg="Heartbeat"),
        v1.ErrorMsg(ts_event=TS, err="Unknown symbol"),
        _trade(),
    ]
    stream = _meta(version=1) + b"".join(bytes(r) for r in recs)
    _, batch = decode(stream)
    assert batch.mappings == [(42, "ESZ3")]
    assert batch.system == [(None, "Heartbeat")] and batch.errors == [(None, "Unknown symbol")]
    assert len(batch.records) == 1 and batch.malformed == 0


def test_v3_control_records_and_mapping_rule():
    recs = [
        dbn.SymbolMappingMsg(publisher_id=0, instrument_id=42, ts_event=TS, stype_in=dbn.SType.RAW_SYMBOL,
                             stype_in_symbol="ESZ3", stype_out=dbn.SType.INSTRUMENT_ID, stype_out_symbol="42",
                             start_ts=TS, end_ts=TS + 1),
        dbn.SymbolMappingMsg(publisher_id=0, instrument_id=43, ts_event=TS, stype_in=dbn.SType.PARENT,
                             stype_in_symbol="NQ.FUT", stype_out=dbn.SType.INSTRUMENT_ID, stype_out_symbol="NQZ3",
                             start_ts=TS, end_ts=TS + 1),
        dbn.SystemMsg(ts_event=TS, msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT),
        dbn.ErrorMsg(ts_event=TS, err="Unknown symbol", code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED),
    ]
    _, batch = decode(_meta() + b"".join(bytes(r) for r in recs))
    assert batch.mappings == [(42, "ESZ3"), (43, "NQZ3")]
    assert batch.system == [(0, "Heartbeat")] and batch.errors == [(4, "Unknown symbol")]


def test_ts_out_records():
    plain = [bytes(_trade(i)) for i in range(5)]
    with_out = [bytes([r[0] + 2]) + r[1:] + (TS + 5000 + i).to_bytes(8, "little") for i, r in enumerate(plain)]
    stream = _meta(ts_out=True) + b"".join(with_out)
    ref = dbn.DBNDecoder()
    ref.write(stream)
    assert len([r for r in ref.decode() if isinstance(r, dbn.TradeMsg)]) == 5  # the reference accepts it
    _, a = decode(stream)
    _, b = decode(_meta() + b"".join(plain))
    assert_records_equal(a.records, b.records)
    assert a.malformed == 0 and len(a.records) == 5


def test_tbbo_quote_before_trade():
    lv = dbn.BidAskPair(bid_px=4_500_000_000_000, ask_px=UNDEF_PRICE, bid_sz=5, ask_sz=0, bid_ct=2, ask_ct=0)
    rec = dbn.MBP1Msg(publisher_id=1, instrument_id=42, ts_event=TS, price=4_500_000_000_000, size=5,
                      action=dbn.Action.TRADE, side=dbn.Side.ASK, depth=0, ts_recv=TS, flags=dbn.F_LAST, levels=lv)
    _, mbp = decode(_meta(schema=dbn.Schema.MBP_1) + bytes(rec))
    _, tbbo = decode(_meta(schema=dbn.Schema.TBBO) + bytes(rec))
    assert mbp.records["kind"].tolist() == [Kind.TRADE, Kind.QUOTE]
    assert tbbo.records["kind"].tolist() == [Kind.QUOTE, Kind.TRADE]
    assert tbbo.records["price2"][0] == UNDEF_PRICE and tbbo.records["side"][1] == Side.ASK


def test_record_sizes_match_databento_dbn():
    mods = [dbn.v1, dbn.v2, dbn.v3]
    names = {0x00: "TradeMsg", 0x01: "MBP1Msg", 0x0A: "MBP10Msg", 0x12: "StatusMsg", 0x13: "InstrumentDefMsg",
             0x14: "ImbalanceMsg", 0x15: "ErrorMsg", 0x16: "SymbolMappingMsg", 0x17: "SystemMsg",
             0x18: "StatMsg", 0x20: "OHLCVMsg", 0xA0: "MBOMsg", 0xB1: "CMBP1Msg", 0xC0: "CBBOMsg",
             0xC2: "TCBBOMsg", 0xC3: "BBOMsg"}
    for rtype, cls in names.items():
        assert RECORD_SIZES[rtype][1:] == tuple(getattr(m, cls).size_hint for m in mods), cls
    rtypes = {getattr(dbn.RType, n).value for n in dir(dbn.RType) if n.isupper()}
    assert rtypes and rtypes <= set(RECORD_SIZES)


# ---- bad input: counted, never a crash, nothing before the damage lost


@pytest.fixture(scope="module")
def trades():
    data = read_file(TRADES_V1)
    _, offset = read_metadata(data)
    _, batch = decode(data)
    return data, offset, batch.records


def test_truncated_file_keeps_complete_records(trades):
    data, offset, full = trades
    _, batch = decode(data[: offset + 48 * 50 + 17])
    assert_records_equal(batch.records, full[:50])
    assert batch.malformed == 1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d[:40], "truncated"),
        (lambda d: d[:5], "truncated"),
        (lambda d: b"XBN" + d[3:], "magic"),
        (lambda d: d[:3] + bytes([9]) + d[4:], "version"),
        (lambda d: d[:3] + bytes([0]) + d[4:], "version"),
    ],
)
def test_bad_metadata_raises(trades, mutate, match):
    data = mutate(trades[0])
    with pytest.raises(DbnError, match=match):
        decode(data)
    with pytest.raises(DbnError, match=match):
        read_metadata(data)


def test_unknown_rtype_is_malformed(trades):
    data, offset, full = trades
    bad = bytearray(data)
    bad[offset + 48 * 10 + 1] = 0x77
    _, batch = decode(bytes(bad))
    assert batch.malformed == 1
    assert_records_equal(batch.records, np.concatenate([full[:10], full[11:]]))


@pytest.mark.parametrize("length_byte", [0, 1, 3, 13, 255])
def test_corrupt_length_resyncs(trades, length_byte):
    data, offset, full = trades
    bad = bytearray(data)
    bad[offset + 48 * 30] = length_byte
    for chunks in (None, [offset + 48 * 30 + 5, 7, 300]):
        _, batch = decode(bytes(bad), chunks)
        assert batch.malformed == 1
        assert_records_equal(batch.records[:30], full[:30])
        assert_records_equal(batch.records[30:], full[31:])


def test_bad_side_and_action_bytes_are_malformed(trades):
    data, offset, full = trades
    bad = bytearray(data)
    bad[offset + 48 * 3 + 29] = ord("Z")  # side
    bad[offset + 48 * 7 + 28] = ord("?")  # action
    _, batch = decode(bytes(bad))
    assert batch.malformed == 2
    assert len(batch.records) == 118


@pytest.mark.parametrize("seed", range(20))
def test_random_garbage_never_crashes(trades, seed):
    data, offset, full = trades
    rng = np.random.default_rng(seed)
    bad = bytearray(data)
    where = rng.integers(offset, len(bad), size=int(rng.integers(1, 40)))
    for i in where:
        bad[i] = int(rng.integers(0, 256))
    first = int(where.min() - offset) // 48
    _, batch = decode(bytes(bad), [int(x) for x in rng.integers(1, 500, size=10)])
    # every record before the first damaged byte is kept exactly
    assert_records_equal(batch.records[:first], full[:first])
    assert len(batch.records) <= len(full)


def test_garbage_tail_after_metadata(trades):
    data, offset, _ = trades
    rng = np.random.default_rng(1)
    junk = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    _, batch = decode(data[:offset] + junk)
    assert batch.consumed == offset + 5000


def test_corrupt_zstd_file(tmp_path):
    raw = TRADES_V1.read_bytes()
    bad = tmp_path / "bad.dbn.zst"
    bad.write_bytes(raw[:4] + bytes(50) + raw[54:])
    with pytest.raises(DbnError, match="zstd"):
        read_file(bad)


# ---- instrument remapping


def test_instrument_map():
    recs = np.zeros(6, RECORD_DTYPE)
    recs["instrument_id"] = [5602, 118, 5602, 7, 4_000_000_000, 118]
    im = InstrumentMap()
    assert im.apply(recs.copy()).all()
    im.add(5602, 1)
    im.add(118, 2)
    im.add(4_000_000_000, 3)
    unknown = im.apply(recs)
    assert recs["instrument_id"].tolist() == [1, 2, 1, 7, 3, 2]
    assert unknown.tolist() == [False, False, False, True, False, False]
    im.add(118, 9)
    recs["instrument_id"] = [118] * 6
    im.apply(recs)
    assert (recs["instrument_id"] == 9).all() and len(im) == 3


def test_instrument_map_in_place_stops_at_a_new_id_and_goes_on_from_there():
    """The replay's one-pass remap: nothing at or after the first unknown vendor id is touched,
    so an id already rewritten is never taken for a vendor id again (our 7 here is also a vendor
    id, filtered out: a second pass from the start would zero the first two records)."""
    recs = np.zeros(6, RECORD_DTYPE)
    recs["instrument_id"] = [5602, 5602, 7, 5602, 4_000_000_000, 7]
    ids = recs["instrument_id"]  # the strided column, as the replay passes it
    im = InstrumentMap()
    assert im.map_in_place(ids) == (0, 0)
    im.add(5602, 7)
    assert im.map_in_place(ids) == (2, 0)
    assert ids.tolist() == [7, 7, 7, 5602, 4_000_000_000, 7]
    im.add(7, 0)
    im.add(4_000_000_000, 5)
    assert im.map_in_place(ids, 2) == (6, 2)
    assert ids.tolist() == [7, 7, 0, 7, 5, 0]
