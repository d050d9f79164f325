"""The compiled payload writers give exactly msgspec's bytes, and a publisher sends them as they are.

`process/calc/encode.py` writes `Bar`, `Vwap` and `Indicator` maps from the kernels' output
rows; each test here builds the Struct the same row used to become (as the per-message Python
did) and compares ``msgspec.msgpack.encode`` of it, byte for byte, for random values: floats
with NaN payloads, infinities and -0.0, integers at every MessagePack width boundary, long and
non-ASCII symbols, sequence numbers crossing widths. These payload schemas have no optional
field, so there is no None to write.
"""

from __future__ import annotations

import struct

import msgpack
import msgspec
import numpy as np
import pytest
from _calcref import make_trades
from hypothesis import given, settings
from hypothesis import strategies as st
from test_publish import RawSub, finish, handshake

from streamctl.bus import wire
from streamctl.bus.messages import Messages, MessageWriter, Topics
from streamctl.bus.publisher import Publisher
from streamctl.process.calc import bar_kernels as bk
from streamctl.process.calc.encode import (
    Producer,
    Strings,
    message_bounds,
    pack_series,
    series_heads,
    write_bars,
)
from streamctl.process.calc.engine import CalculatorSet
from streamctl.process.calc.settings import (
    AnomalyConfig,
    BarsConfig,
    CalculatorsConfig,
    VwapConfig,
    ZScoreConfig,
)

_EDGES = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1]
EDGES = sorted({*_EDGES, *(-v for v in _EDGES), -(2**63), -33, -129, -32769, -(2**31) - 1})
INT64 = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**63 - 1))
FLOAT = st.one_of(st.floats(), st.sampled_from([-0.0, float("inf"), float("-inf")]),
                  st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]))
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)  # str8/16 headers
SEQ = st.sampled_from([0, 126, 127, 254, 255, 65534, 65535, 2**32 - 2, 2**32 - 1, 2**40])


def _producer(src: str, symbols: list[str]) -> Producer:
    producer = Producer(src)
    for symbol in symbols:
        producer.add_symbol(symbol)
    return producer


def _numbered(producer: Producer, keys: list[tuple], first_seq: list[int]) -> tuple[np.ndarray, dict]:
    """A topic id per key (registered in `producer`'s table, starting at `first_seq`) and the
    seqs the next messages get, per key."""
    topics = producer.topics
    ids = {}
    for key, seq in zip(keys, first_seq, strict=False):
        ids[key] = topics.id(f"vwap.T{len(ids)}")  # any single-map topic: the writers only number it
        topics.seqs[ids[key]] = seq
    return ids, {key: int(topics.seqs[tid]) for key, tid in ids.items()}


def _messages(writer: MessageWriter) -> list[bytes]:
    return [payload for _, payload in writer.finish()]


@settings(max_examples=150, deadline=None)
@given(src=TEXT, symbols=st.lists(TEXT, min_size=1, max_size=3), labels=st.lists(TEXT, min_size=1, max_size=3),
       rows=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.lists(INT64, min_size=9, max_size=9),
                               FLOAT, FLOAT, st.integers(0, 3), st.integers(0, 10**12)), min_size=1, max_size=12),
       first_seq=st.lists(SEQ, min_size=9, max_size=9))
def test_bar_maps_are_what_msgspec_encodes(src, symbols, labels, rows, first_seq):
    producer = _producer(src, symbols)
    nspec = len(labels)
    rows = [(s % len(symbols), k % nspec, *rest) for s, k, *rest in rows]
    ids, seqs = _numbered(producer, [(s, k) for s in range(len(symbols)) for k in range(nspec)], first_seq)
    tid = np.full((len(symbols), nspec), -1, dtype=np.int64)
    for (s, k), i in ids.items():
        tid[s, k] = i
    widths = np.array([10**9 + k for k in range(nspec)], dtype=np.int64)
    out_int = np.zeros((len(rows), bk.NO_I), dtype=np.int64)
    out_float = np.zeros((len(rows), bk.NO_F), dtype=np.float64)
    expected = []
    for r, (s, k, ints, volume, vwap, empty, near) in enumerate(rows):
        start, end, open_, high, low, close, trades, ev, recv = ints
        if empty:
            start = near  # a run of empty bars: start + n * width stays an int64
        out_int[r] = [s, k, start, end, open_, high, low, close, trades, ev, recv, empty]
        out_float[r] = [volume, vwap]
        common = {"symbol": symbols[s], "interval": labels[k], "ts_event": ev, "ts_recv": recv, "src": src}
        if not empty:
            seqs[s, k] += 1
            expected.append(wire.Bar(ts_start=start, ts_end=end, open=open_ / 1e9, high=high / 1e9, low=low / 1e9,
                                     close=close / 1e9, volume=volume, trades=trades, vwap=vwap, seq=seqs[s, k],
                                     **common))
        for e in range(empty):
            seqs[s, k] += 1
            begin, price = start + e * int(widths[k]), close / 1e9
            expected.append(wire.Bar(ts_start=begin, ts_end=begin + int(widths[k]), open=price, high=price,
                                     low=price, close=price, volume=0.0, trades=0, vwap=price, seq=seqs[s, k],
                                     **common))
    writer = producer.writer()
    label_strings = Strings([msgspec.msgpack.encode(label) for label in labels])
    write_bars(writer, producer, label_strings, out_int, out_float, len(rows), tid, widths,
               int(out_int[:, bk.O_NEMPTY].sum()))
    assert writer.size <= len(expected) * message_bounds(producer, label_strings)[0]
    assert _messages(writer) == [msgspec.msgpack.encode(bar) for bar in expected]


@settings(max_examples=150, deadline=None)
@given(src=TEXT, symbols=st.lists(TEXT, min_size=1, max_size=4), vwap=st.booleans(),
       sma=st.lists(st.integers(1, 2**31), max_size=2, unique=True),
       ema=st.lists(st.integers(1, 2**31), max_size=2, unique=True), window=st.integers(1, 2**40),
       rows=st.lists(st.tuples(st.lists(INT64, min_size=4, max_size=4), st.lists(FLOAT, min_size=7, max_size=7)),
                     min_size=1, max_size=4),
       first_seq=st.lists(SEQ, min_size=20, max_size=20))
def test_vwap_and_indicator_maps_are_what_msgspec_encodes(src, symbols, vwap, sma, ema, window, rows, first_seq):
    producer = _producer(src, symbols)
    n = min(len(rows), len(symbols))  # one row per touched symbol, ascending
    keys = [(kind, s, k) for s in range(len(symbols)) for kind, k in
            [("vwap", 0)] * vwap + [("sma", k) for k in range(len(sma))] + [("ema", k) for k in range(len(ema))]]
    ids, seqs = _numbered(producer, keys, first_seq)
    tid_of = np.full((len(symbols), vwap + len(sma) + len(ema)), -1, dtype=np.int64)  # Vwap, SMAs, EMAs
    for (kind, s, k), i in ids.items():
        tid_of[s, {"vwap": 0, "sma": vwap + k, "ema": vwap + len(sma) + k}[kind]] = i
    values_int = np.zeros((n, 5), dtype=np.int64)
    values_float = np.zeros((n, 3 + len(sma) + len(ema)), dtype=np.float64)
    for j, (ints, floats) in enumerate(rows[:n]):
        ev, recv, start, count = ints
        values_int[j] = [j, ev, recv, start, count]
        values_float[j] = floats[:values_float.shape[1]]
    expected = []

    def numbered(key, payload):
        seqs[key] += 1
        payload.seq, payload.src = seqs[key], src
        expected.append(payload)

    for j in range(n) if vwap else []:
        ev, recv, start = values_int[j, 1:4].tolist()
        session_vwap, session_volume, rolling_vwap = values_float[j, :3].tolist()
        numbered(("vwap", j, 0), wire.Vwap(symbol=symbols[j], ts_event=ev, ts_recv=recv, session_start=start,
                                           session_vwap=session_vwap, session_volume=session_volume,
                                           rolling_vwap=rolling_vwap, window=window))
    for kind, spans, first in (("sma", sma, 3), ("ema", ema, 3 + len(sma))):
        for k, span in enumerate(spans):
            for j in range(n):
                if kind == "sma" and values_int[j, 4] < span:  # an SMA whose window is not full yet
                    continue
                numbered((kind, j, k), wire.Indicator(symbol=symbols[j], name=kind, window=span,
                                                      value=float(values_float[j, first + k]),
                                                      ts_event=int(values_int[j, 1]),
                                                      ts_recv=int(values_int[j, 2])))
    spans = np.array([*sma, *ema], dtype=np.int64)
    heads = Strings([head for symbol in symbols for head in series_heads(src, symbol, window, sma, ema)])
    _, vwap_bound, indicator_bound = message_bounds(producer, Strings())
    room = n * (vwap_bound if vwap else 0) + n * len(spans) * indicator_bound  # what `fused.run_batch` reserves
    writer = producer.writer()
    writer.reserve(room, n * (vwap + len(spans)))
    writer.size, writer.count = pack_series(
        writer.data, writer.size, writer.index, writer.count, writer.topics.seqs, values_int, values_float, n, tid_of,
        vwap, spans, len(sma), heads.data, heads.ends)
    assert writer.size <= room
    assert _messages(writer) == [msgspec.msgpack.encode(p) for p in expected]


def test_a_writer_grows_and_mixes_compiled_maps_with_structs():
    topics = Topics()
    writer = MessageWriter(topics, "w", nbytes=8, messages=1)  # too small for anything: it grows
    event = wire.Event(source="w", kind="probe", message="é" * 40, ts=5)
    writer.add("event.w", event)
    writer.add("event.w", wire.Event(source="w", kind="probe", message="", ts=6))
    messages = writer.finish()
    assert len(messages) == 2 and messages.seqs.tolist() == [1, 2] and topics.texts == ["event.w"]
    [(_, first), (_, second)] = messages.decode()
    assert first == wire.Event(source="w", kind="probe", message="é" * 40, ts=5, seq=1, src="w")
    assert second.seq == 2
    with pytest.raises(ValueError, match="array of maps"):
        topics.id("trade.AAPL")


FULL = CalculatorsConfig(bars=BarsConfig(time=["1s"], ticks=[20]), vwap=VwapConfig(rolling_window=30), sma=[5],
                         ema=[8], anomalies=AnomalyConfig(zscore=ZScoreConfig(window=20, threshold=2.0)), book=None)


def test_a_calculator_set_numbers_each_topic_from_one_across_batches():
    records, sym = make_trades(3000, symbols=3, seed=4)
    calc = CalculatorSet(FULL, src="worker-3", live=False)
    for name in ("AAA", "BRK.B", "CCC"):
        calc.add_symbol(name)
    batches = [calc.on_batch(records[a:a + 400], sym[a:a + 400]) for a in range(0, len(records), 400)]
    batches.append(calc.flush())
    seen: dict[str, list[int]] = {}
    for messages in batches:
        assert messages.src == "worker-3"
        for (topic, data), seq in zip(messages, messages.seqs.tolist(), strict=True):
            payload = msgpack.unpackb(data)
            assert payload["seq"] == seq and payload["src"] == "worker-3"
            seen.setdefault(topic, []).append(seq)
    assert {t.split(".")[0] for t in seen} == {"bar", "vwap", "sma", "ema", "anomaly"}
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in seen.values())
    assert all(int(calc.topics.seqs[calc.topics.id(t)]) == len(seqs) for t, seqs in seen.items())


def test_a_publisher_sends_the_encoded_messages_as_they_are(proxy, cleanup):
    records, sym = make_trades(1200, symbols=3, seed=5)
    calc = CalculatorSet(FULL, src="worker-3", live=False)
    for name in ("AAA", "BRK.B", "CCC"):
        calc.add_symbol(name)
    sub = RawSub(proxy.backend, b"")
    cleanup.append(sub)
    pub = Publisher(proxy.frontend, src="worker-3")
    cleanup.append(pub)
    handshake(pub, [sub])
    sent: list[tuple[str, bytes]] = []
    start = pub.messages_out
    for a in range(0, len(records), 300):
        messages = calc.on_batch(records[a:a + 300], sym[a:a + 300])
        pub.publish_messages(messages)
        sent += list(messages)
    assert pub.messages_out - start == len(sent)
    pub.publish("vwap.AAA", wire.Vwap(symbol="AAA", ts_event=1, ts_recv=2, session_start=0, session_vwap=1.0,
                                      session_volume=1.0, rolling_vwap=1.0, window=1))
    finish(pub, [sub])
    got = sub.data()
    assert [(t, msgpack.unpackb(p)) for t, p in sent] == got[:-1] and len(sent) > 100
    assert got[-1][1]["seq"] == max(m["seq"] for t, m in got[:-1] if t == "vwap.AAA") + 1  # goes on from the batch
    with pytest.raises(ValueError, match="src"):
        other = CalculatorSet(FULL, src="worker-9", live=False)
        other.add_symbol("AAA")
        pub.publish_messages(other.on_batch(records[:50], np.zeros(50, dtype=np.int32)))


def test_messages_iterate_their_payloads_in_order():
    topics = Topics()
    tid = topics.id("vwap.X")
    messages = Messages(topics, "w", np.frombuffer(b"abcdef", dtype=np.uint8), np.array([2, 6]),
                        np.array([tid, tid]), np.array([1, 2]))
    assert list(messages) == [("vwap.X", b"ab"), ("vwap.X", b"cdef")] and len(messages) == 2 and messages
