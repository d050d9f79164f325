"""The compiled raw-trade packer gives exactly the bytes the wire has carried, and a publisher
numbers its topics as one sequence whichever way a batch was encoded.

`bus/native_trades.py` writes a batch's ``trade.SYMBOL`` messages in one call. For small batches
the tests build the `wire.Trade` Structs the Struct path built (grouped by symbol in order of
first appearance, oldest first) and compare ``msgspec.msgpack.encode`` of each list; for large
ones (``fixed``) an independent encoder of the int64 layout, groups by symbol index. Byte for
byte, for random values: integers at every MessagePack width boundary, floats with NaN payloads,
infinities and -0.0, every side byte, sequence numbers crossing widths, skipped records.
"""

from __future__ import annotations

import struct
import time

import msgpack
import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.bus import wire
from streamctl.bus.native_send import Outbox
from streamctl.bus.native_trades import TradeTopics
from streamctl.bus.publisher import Publisher
from streamctl.shm.records import PRICE_SCALE, Kind, empty

_EDGES = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1]
EDGES = sorted({*_EDGES, *(-v for v in _EDGES), -(2**63), -33, -129, -32769, -(2**31) - 1})
INT64 = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**63 - 1))
PRICE = st.one_of(st.sampled_from([0, 1, -1, 2**53, -(2**53), 187_250_000_000]), st.integers(-(2**53), 2**53))
FLOAT = st.one_of(st.floats(), st.sampled_from([-0.0, float("inf"), float("-inf")]),
                  st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]))
SEQ = st.sampled_from([0, 126, 127, 254, 255, 65534, 65535, 2**32 - 2, 2**32 - 1, 2**40])
SYMBOL = st.from_regex(r"[A-Z][A-Z0-9_-]{0,20}", fullmatch=True)
RECORD = st.tuples(INT64, INT64, PRICE, FLOAT, st.integers(0, 255), st.sampled_from([Kind.TRADE, Kind.QUOTE]),
                   st.integers(-2, 6))


def _parts(outbox: Outbox) -> list[bytes]:
    ends = outbox.ends[:outbox.parts].tolist()
    return [outbox.data[start:end].tobytes() for start, end in zip([0, *ends], ends, strict=False)]


def _expected(src: str, records: np.ndarray, symbols: list[str], sym_idx: np.ndarray, seqs: dict[str, int]
              ) -> tuple[list[bytes], int]:
    """What the Struct path sends for `records`' trades, numbered on from `seqs`; and how many it skips."""
    groups: dict[str, list[wire.Trade]] = {}
    skipped = 0
    for record, index in zip(records.tolist(), sym_idx.tolist(), strict=True):
        ts_event, ts_recv, price, _, size, _, _, _, kind, side, _, _ = record
        if kind != Kind.TRADE:
            continue
        if not 0 <= index < len(symbols):
            skipped += 1
            continue
        symbol = symbols[index]
        seqs[symbol] = seqs.get(symbol, 0) + 1
        groups.setdefault(symbol, []).append(wire.Trade(
            seq=seqs[symbol], src=src, symbol=symbol, ts_event=ts_event, ts_recv=ts_recv, price=price / PRICE_SCALE,
            size=size, side={1: "B", 2: "S"}.get(side, "N")))
    parts = []
    for symbol, trades in groups.items():
        parts += [wire.topic_frame(wire.topic("trade", symbol)), msgspec.msgpack.encode(trades)]
    return parts, skipped


def _fixed(src: str, records: np.ndarray, symbols: list[str], sym_idx: np.ndarray, seqs: dict[str, int]
           ) -> list[bytes]:
    """The int64 layout of large batches, written field by field with `struct`."""
    enc = msgspec.msgpack.encode
    groups: dict[int, list[tuple]] = {}
    for record, index in zip(records.tolist(), sym_idx.tolist(), strict=True):
        if record[8] == Kind.TRADE and 0 <= index < len(symbols):
            groups.setdefault(index, []).append(record)
    parts = []
    for index in sorted(groups):
        symbol, rows = symbols[index], groups[index]
        body = [bytes([0x90 | len(rows)]) if len(rows) < 16 else b"\xdc" + struct.pack(">H", len(rows))]
        for ts_event, ts_recv, price, _, size, _, _, _, _, side, _, _ in rows:
            seqs[symbol] = seqs.get(symbol, 0) + 1
            body.append(b"\x88" + enc("seq") + b"\xd3" + struct.pack(">q", seqs[symbol]) + enc("src") + enc(src)
                        + enc("symbol") + enc(symbol) + enc("ts_event") + b"\xd3" + struct.pack(">q", ts_event)
                        + enc("ts_recv") + b"\xd3" + struct.pack(">q", ts_recv)
                        + enc("price") + b"\xcb" + struct.pack(">d", float(np.float64(price) / PRICE_SCALE))
                        + enc("size") + b"\xcb" + struct.pack(">d", size)
                        + enc("side") + b"\xa1" + {1: b"B", 2: b"S"}.get(side, b"N"))
        parts += [wire.topic_frame(wire.topic("trade", symbol)), b"".join(body)]
    return parts


def _records(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    records = empty(len(rows))
    for i, (ts_event, ts_recv, price, size, side, kind, _) in enumerate(rows):
        records[i] = (ts_event, ts_recv, price, 0, size, 0.0, 0, 0, kind, side, 0, 0)
    return records, np.array([row[6] for row in rows], dtype=np.int32)


@settings(max_examples=300, deadline=None)
@given(st.lists(SYMBOL, min_size=1, max_size=6, unique=True), st.lists(SEQ, min_size=6, max_size=6),
       st.lists(st.tuples(st.booleans(), st.lists(RECORD, max_size=40)), min_size=1, max_size=3))
def test_packed_trades_are_the_wire_bytes(symbols, first_seqs, batches):
    table = TradeTopics("worker-3")
    rows = np.array([table.add(wire.topic("trade", s), s) for s in symbols], dtype=np.int64)
    table.seqs[:len(symbols)] = first_seqs[:len(symbols)]
    seqs = dict(zip(symbols, first_seqs, strict=False))
    for fixed, batch in batches:
        records, sym_idx = _records(batch)
        outbox = Outbox()
        messages, skipped, muted = table.pack(records, sym_idx, rows, outbox, fixed=fixed)
        expected_skipped = int(((records["kind"] == Kind.TRADE) & ~((sym_idx >= 0) & (sym_idx < len(symbols)))).sum())
        parts = _fixed("worker-3", records, symbols, sym_idx, seqs) if fixed else \
            _expected("worker-3", records, symbols, sym_idx, seqs)[0]
        assert _parts(outbox) == parts
        assert (messages, skipped, muted) == (len(parts) // 2, expected_skipped, 0)
    assert table.seqs[:len(symbols)].tolist() == [seqs[s] for s in symbols]


def test_muted_messages_are_numbered_not_written():
    """By message count (`count0 + k < muted_until`) or by each topic's floor."""
    table = TradeTopics("w0")
    rows = np.array([table.add("trade.A", "A"), table.add("trade.B", "B")])
    records, sym_idx = _records([(1, 2, 3, 1.0, 1, Kind.TRADE, s) for s in (0, 1, 0)])
    outbox = Outbox()
    assert table.pack(records, sym_idx, rows, outbox, count0=5, muted_until=6) == (2, 0, 1)  # A 1-2 muted
    assert table.pack(records, sym_idx, rows, outbox, floors=np.array([3, 2])) == (2, 0, 1)  # B 2 muted
    assert table.pack(records, sym_idx, rows, outbox, floors=np.array([6, 0])) == (2, 0, 1)  # A 5-6 muted
    expected = _expected("w0", records, ["A", "B"], sym_idx, {})[0][2:]  # B 1
    expected += _expected("w0", records, ["A", "B"], sym_idx, {"A": 2, "B": 1})[0][:2]  # A 3-4
    expected += _expected("w0", records, ["A", "B"], sym_idx, {"A": 4, "B": 2})[0][2:]  # B 3
    assert _parts(outbox) == expected
    assert table.seqs[:2].tolist() == [6, 3]


def test_packer_appends_after_what_the_outbox_holds():
    table = TradeTopics("w0")
    rows = np.array([table.add("trade.A", "A")])
    outbox = Outbox()
    outbox.add(b"quote.A\x00", b"\x90")
    records, sym_idx = _records([(1, 2, 3_000_000_000, 1.0, 1, Kind.TRADE, 0)] * 3)
    assert table.pack(records, sym_idx, rows, outbox) == (1, 0, 0)
    assert _parts(outbox) == [b"quote.A\x00", b"\x90", *_expected("w0", records, ["A"], sym_idx, {})[0]]


@pytest.mark.parametrize("price, row, code", [(2**53 + 1, 0, -1), (-(2**53) - 1, 0, -1), (1, -2, -2)])
def test_packer_writes_nothing_for_a_huge_price_or_an_unknown_row(price, row, code):
    """Beyond 2**53 float(price) / 1e9 may round differently from Python's int division; a row
    not looked up yet (-2) needs its topic first: either way the batch is left whole."""
    table = TradeTopics("w0")
    table.add("trade.A", "A")
    records, sym_idx = _records([(1, 2, 5, 1.0, 1, Kind.TRADE, 0), (1, 2, price, 1.0, 1, Kind.TRADE, 0)])
    rows = np.array([0 if price != 1 else row])
    outbox = Outbox()
    assert table.pack(records, sym_idx, rows, outbox)[0] == code
    assert (outbox.size, outbox.parts, table.seqs[0]) == (0, 0, 0)


class _Sub:
    """A plain SUB socket bound on IPC that `pub` has been seen to reach (no slow joiner)."""

    def __init__(self, tmp_path, pub_src: str = "w0"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.endpoint = f"ipc://{tmp_path}/raw.sock"
        self.sock.bind(self.endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"trade.")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"event.")

    def joined(self, pub: Publisher) -> None:
        deadline = time.monotonic() + 10
        while not self.sock.poll(20):
            assert time.monotonic() < deadline, "subscription never reached the publisher"
            pub.publish("event.probe", wire.Event(source="t", kind="probe", message="", ts=0))
        while self.sock.poll(50):
            self.sock.recv_multipart()

    def trades(self, count: int) -> list[tuple[str, list[int]]]:
        """The next `count` trade messages: topic and seqs."""
        out = []
        while len(out) < count:
            assert self.sock.poll(10_000), f"{len(out)} of {count} messages arrived"
            frame, payload = self.sock.recv_multipart()
            if frame.startswith(b"trade."):
                out.append((frame[:-1].decode(), [m["seq"] for m in msgpack.unpackb(payload)]))
        return out

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _trades(symbol_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return _records([(i, i, 1_000_000_000 + i, 1.0, 1, Kind.TRADE, s) for i, s in enumerate(symbol_indices)])


def test_one_sequence_per_topic_across_every_path(tmp_path):
    """Struct batches, compiled small batches and packed large batches number one sequence per
    topic; `sequences` reads it and `resume_sequences` goes on from it."""
    sub = _Sub(tmp_path)
    try:
        with Publisher(sub.endpoint, src="w0") as pub:
            sub.joined(pub)
            pub.publish_batch("trade.B", [wire.Trade(symbol="B", ts_event=0, ts_recv=0, price=1.0, size=1.0,
                                                     side="N") for _ in range(2)])
            symbols = ["A", "B"]
            small = _trades([1, 0, 1])
            pub.publish_raw(small[0], symbols, small[1], trades=True, quotes=False)
            large = _trades([0, 1] * 20)
            pub.publish_raw(large[0], symbols, large[1], trades=True, quotes=False)
            assert sub.trades(5) == [("trade.B", [1, 2]), ("trade.B", [3, 4]), ("trade.A", [1]),
                                     ("trade.A", list(range(2, 22))), ("trade.B", list(range(5, 25)))]
            assert pub.sequences() == {"trade.A": 21, "trade.B": 24, "event.probe": pub.sequence("event.probe")}
            saved, sent = pub.sequences(), pub.messages_out
        with Publisher(sub.endpoint, src="w0") as again:
            sub.joined(again)
            again.resume_sequences(saved, sent)
            again.publish_raw(small[0], symbols, small[1], trades=True, quotes=False)
            assert sub.trades(2) == [("trade.B", [25, 26]), ("trade.A", [22])]
    finally:
        sub.close()


def test_muted_topics_are_numbered_but_not_sent(tmp_path):
    """A restarted worker's replay (`process/restore`): the trades the hub already has on a topic
    are numbered again and not sent; the rest go out."""
    sub = _Sub(tmp_path)
    try:
        with Publisher(sub.endpoint, src="w0") as pub:
            sub.joined(pub)
            pub.mute_topics({"trade.A": 2})
            records, sym_idx = _trades([0, 1, 0])
            pub.publish_raw(records, ["A", "B"], sym_idx, trades=True, quotes=False)  # A 1-2 muted, B 1 goes
            pub.publish_raw(records, ["A", "B"], sym_idx, trades=True, quotes=False)  # all past the mark
            pub.mute_topics(None)
            pub.publish_raw(records[:1], ["A", "B"], sym_idx[:1], trades=True, quotes=False)  # compiled again
            assert sub.trades(4) == [("trade.B", [1]), ("trade.A", [3, 4]), ("trade.B", [2]), ("trade.A", [5])]
    finally:
        sub.close()
