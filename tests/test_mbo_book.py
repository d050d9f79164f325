"""The MBO book against an independent reference book, examined at every F_LAST record.

The reference is written plainly from Databento's documented rules (its order-book examples):
`A` adds; `C` takes `size` off the order and removes it at zero; `M` moves the order to the
record's price and size (a modify of an order not held is an add); `R` clears the instrument;
`T`, `F` and `N` leave the book alone. Its levels are summed from the resting orders each time
they are looked at, so it shares no bookkeeping with the kernels' level totals.

Two views of the decoder are checked: the level totals its `MboBook` holds, and the level book a
consumer rebuilds from the BOOK/RESET records it emits (what a worker publishes).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from _data import DATA, sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.ingest.formats.dbn.constants import F_LAST, F_SNAPSHOT, HEADER_SIZE, RType
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file, read_metadata
from streamctl.ingest.formats.dbn.encoder import encode_metadata, record_header
from streamctl.ingest.formats.dbn.kernels import _mix
from streamctl.ingest.formats.dbn.mbo_book import MboBook
from streamctl.shm.records import Kind, Side

Levels = dict[tuple[int, int, int], int]
"""(instrument, side, price) -> total size of the non-empty levels."""

_SIDES = {ord("B"): int(Side.BID), ord("A"): int(Side.ASK)}
_MBO_SIZE = 56
_MBO_BODY = struct.Struct("<QqIBBccQiI")  # order_id, price, size, flags, channel, action, side, ts_recv, delta, seq


class ReferenceBook:
    """Orders in per-level queues, as Databento's examples keep them: (instrument, side, price)
    -> {order id: size} in time priority, and order id -> its level."""

    def __init__(self) -> None:
        self.queues: dict[tuple[int, int, int], dict[int, int]] = {}
        self.where: dict[tuple[int, int], tuple[int, int, int]] = {}  # (instrument, order id) -> level

    def apply(self, instrument: int, order_id: int, action: str, side: int, price: int, size: int) -> None:
        key = (instrument, order_id)
        if action in "TFN":
            return
        if action == "R":
            self.queues = {k: v for k, v in self.queues.items() if k[0] != instrument}
            self.where = {k: v for k, v in self.where.items() if k[0] != instrument}
        elif action == "C":
            if key in self.where:  # a cancel of an order never seen changes nothing
                queue = self.queues[self.where[key]]
                queue[order_id] -= min(size, queue[order_id])
                if not queue[order_id]:
                    self._remove(key)
        elif side in _SIDES:  # an add or modify without a side cannot rest on the book
            level = (instrument, _SIDES[side], price)
            if key in self.where and self.where[key] == level:
                self.queues[level][order_id] = size  # same price: keeps its place
            else:  # an add, a modify of an order not held, or a move to the back of a new level
                if key in self.where:
                    self._remove(key)
                self.queues.setdefault(level, {})[order_id] = size
                self.where[key] = level

    def _remove(self, key: tuple[int, int]) -> None:
        level = self.where.pop(key)
        del self.queues[level][key[1]]
        if not self.queues[level]:
            del self.queues[level]

    @property
    def orders(self) -> int:
        """Resting orders with a size (a modify to size 0 leaves an empty order in its queue)."""
        return sum(1 for queue in self.queues.values() for size in queue.values() if size)

    def levels(self) -> Levels:
        return {level: total for level, queue in self.queues.items() if (total := sum(queue.values()))}


_RESET, _BOOK = int(Kind.RESET), int(Kind.BOOK)


def apply_emitted(levels: Levels, records: np.ndarray) -> None:
    """A consumer's level book: BOOK sets a level's total (0 removes it), RESET clears the instrument."""
    columns = (records[name].tolist() for name in ("kind", "instrument_id", "side", "price", "size"))
    for kind, instrument, side, price, size in zip(*columns, strict=True):
        if kind == _RESET:
            for key in [k for k in levels if k[0] == instrument]:
                del levels[key]
        elif kind == _BOOK:
            if size:
                levels[(instrument, side, price)] = int(size)
            else:
                levels.pop((instrument, side, price), None)


def held_levels(book: MboBook, instruments: set[int]) -> Levels:
    return {
        (instrument, int(side), price): size
        for instrument in instruments
        for side in (Side.BID, Side.ASK)
        for price, size in book.levels_of(instrument, side)
    }


def mbo_record(instrument: int, order_id: int, action: str, side: int, price: int, size: int, flags: int,
               sequence: int) -> bytes:
    ts = 1_715_126_400_000_000_000 + sequence
    return record_header(_MBO_SIZE, RType.MBO, instrument_id=instrument, ts_event=ts) + _MBO_BODY.pack(
        order_id, price, size, flags, 0, action.encode(), bytes([side]), ts, 0, sequence)


def mbo_events(path) -> tuple[bytes, list[tuple]]:
    """A file's bytes after the metadata, and its MBO records as (instrument, order id, action,
    side byte, price, size, flags, end offset) in file order."""
    data = read_file(path)
    meta, pos = read_metadata(data)
    body = data[pos:]
    events = []
    offset = 0
    while offset < len(body):
        length = body[offset] * 4
        if body[offset + 1] == RType.MBO:
            instrument = struct.unpack_from("<I", body, offset + 4)[0]
            order_id, price, size, flags, _, action, side, *_ = _MBO_BODY.unpack_from(body, offset + HEADER_SIZE)
            events.append((instrument, order_id, action.decode(), side[0], price, size, flags, offset + length))
        offset += length
    return data[:pos] + body, events


def check_at_every_last(data: bytes, header: int, events: list[tuple], *, book: MboBook | None = None) -> int:
    """Feed the decoder up to each F_LAST record and compare both of its books with the
    reference there. Returns how many F_LAST points were examined."""
    decoder = DbnDecoder(book=book)
    reference = ReferenceBook()
    emitted: Levels = {}
    instruments: set[int] = set()
    written = 0
    examined = 0
    for instrument, order_id, action, side, price, size, flags, end in events:
        reference.apply(instrument, order_id, action, side, price, size)
        instruments.add(instrument)
        if not flags & F_LAST:
            continue
        decoder.write(data[written : header + end])
        written = header + end
        apply_emitted(emitted, decoder.decode().records)
        want = reference.levels()
        assert held_levels(decoder.book, instruments) == want, f"held levels differ after F_LAST #{examined}"
        assert emitted == want, f"emitted levels differ after F_LAST #{examined}"
        examined += 1
    return examined


MBO_SAMPLES = sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("*mbo*.dbn*"))


@pytest.mark.parametrize("name", MBO_SAMPLES)
def test_sample_books_equal_reference_at_every_last(name):
    data, events = mbo_events(sample(name))
    _, header = read_metadata(data)
    assert events, "an MBO sample without MBO records"
    examined = check_at_every_last(data, header, events)
    assert examined == sum(1 for e in events if e[6] & F_LAST)


# ---- generated streams -------------------------------------------------------------------

_INSTRUMENTS = (7, 8)
_TICK = 250_000_000  # 0.25 in DBN's 1e-9 fixed point
_MID = 5_300 * 4


def _colliding_ids(instrument: int, *, bits: int = 12, count: int = 48) -> list[int]:
    """Order ids whose hash sends them to one home slot of a table of 2**bits slots (and so of
    every smaller table): long probe chains, wrap-around and backward shifts on delete."""
    candidates = np.arange(1, 1 << 20, dtype=np.uint64)
    mixed = _mix(candidates ^ (np.uint64(instrument) * np.uint64(0x9E3779B97F4A7C15)))
    home = (mixed >> np.uint64(8)) & np.uint64((1 << bits) - 1)
    slots, counts = np.unique(home, return_counts=True)
    return candidates[home == slots[np.argmax(counts)]][:count].tolist()


with np.errstate(over="ignore"):
    _COLLIDING = {instrument: _colliding_ids(instrument) for instrument in _INSTRUMENTS}


@st.composite
def mbo_stream(draw) -> list[tuple]:
    """Events as (instrument, order id, action, side byte, price, size, flags): a snapshot,
    then adds, cancels (partial, full, of unknown orders), long modify chains moving orders
    across the spread and between sides, trades and fills, and the odd clear."""
    events: list[tuple] = []
    live: list[tuple[int, int]] = []

    def order_id(instrument: int) -> int:
        pick = draw(st.integers(0, 9))
        if pick < 6:
            return draw(st.sampled_from(_COLLIDING[instrument]))
        if pick < 9 and live:
            return draw(st.sampled_from(live))[1]
        return draw(st.integers(1, 2**64 - 1))

    def price(side: int) -> int:
        offset = draw(st.integers(-3, 12))  # negative offsets cross the spread
        return (_MID - offset if side == ord("B") else _MID + 1 + offset) * _TICK

    def side() -> int:
        return draw(st.sampled_from((ord("B"), ord("A"))))

    def snapshot(instrument: int) -> None:
        events.append((instrument, 0, "R", ord("N"), 0, 0, F_SNAPSHOT))
        for _ in range(draw(st.integers(0, 40))):
            s = side()
            events.append((instrument, order_id(instrument), "A", s, price(s), draw(st.integers(1, 50)), F_SNAPSHOT))

    for instrument in _INSTRUMENTS:
        if draw(st.booleans()):
            snapshot(instrument)
    for _ in range(draw(st.integers(1, 100))):
        instrument = draw(st.sampled_from(_INSTRUMENTS))
        kind = draw(st.sampled_from("AAACCMMMMTFNR"))
        if kind == "R" and draw(st.integers(0, 3)):
            continue  # clears stay rare
        if kind == "R":
            snapshot(instrument)
            continue
        oid = order_id(instrument)
        if kind == "M" and draw(st.booleans()):  # a modify chain on one order
            s = side()
            for _ in range(draw(st.integers(2, 15))):
                if draw(st.integers(0, 7)) == 0:
                    s = ord("A") + ord("B") - s  # the side changes
                events.append((instrument, oid, "M", s, price(s), draw(st.integers(0, 30)), 0))
            continue
        s = draw(st.sampled_from((ord("B"), ord("A"), ord("N")))) if kind in "TFN" else side()
        events.append((instrument, oid, kind, s, price(s), draw(st.integers(0, 60)), 0))
        if kind == "A":
            live.append((instrument, oid))
    # F_LAST ends an event after a random number of records, and always on the last one
    out = []
    for i, event in enumerate(events):
        last = i == len(events) - 1 or draw(st.integers(0, 2)) == 0
        out.append((*event[:6], event[6] | (F_LAST if last else 0)))
    return out


def encode_stream(events: list[tuple], version: int) -> tuple[bytes, int, list[tuple]]:
    """DBN bytes of the events (sequence = index), the metadata length, and the events with
    the end offset of their record after the metadata."""
    header = encode_metadata(version=version, dataset="GLBX.MDP3", start=0, schema="mbo")
    records = [mbo_record(*event, sequence=i) for i, event in enumerate(events)]
    ends = np.cumsum([len(r) for r in records]).tolist()
    return header + b"".join(records), len(header), [(*e, end) for e, end in zip(events, ends, strict=True)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=mbo_stream(), version=st.sampled_from((1, 2, 3)))
def test_generated_books_equal_reference_at_every_last(events, version):
    data, header, framed = encode_stream(events, version)
    check_at_every_last(data, header, framed, book=MboBook(capacity=16, level_capacity=16))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=mbo_stream())
def test_generated_books_in_one_batch(events):
    """One decode call for the whole stream, so the tables grow mid-batch; the emitted records
    (by their sequence, the event index) are compared at every F_LAST."""
    data, _, _ = encode_stream(events, 2)
    decoder = DbnDecoder(book=MboBook(capacity=16, level_capacity=16))
    decoder.write(data)
    records = decoder.finish().records
    by_event = np.searchsorted(records["sequence"], np.arange(len(events)), side="right")
    reference = ReferenceBook()
    emitted: Levels = {}
    done = 0
    for i, (instrument, order_id, action, side, price, size, flags) in enumerate(events):
        reference.apply(instrument, order_id, action, side, price, size)
        if flags & F_LAST:
            apply_emitted(emitted, records[done : by_event[i]])
            done = by_event[i]
            assert emitted == reference.levels(), f"emitted levels differ after event {i}"
    assert held_levels(decoder.book, set(_INSTRUMENTS)) == reference.levels()
    assert decoder.book.orders == reference.orders
    assert_last_marks_events(events, records)


def assert_last_marks_events(events: list[tuple], records: np.ndarray) -> None:
    """F_LAST is on the last record an F_LAST event emits and on no other record."""
    sequence, last = records["sequence"].tolist(), (records["flags"] & F_LAST).tolist()
    for j, seq in enumerate(sequence):
        final = j + 1 == len(sequence) or sequence[j + 1] != seq
        assert bool(last[j]) == (final and bool(events[seq][6] & F_LAST)), f"F_LAST wrong on the record of event {seq}"


def test_modify_to_size_zero_that_moves_keeps_f_last():
    """A modify that moves an order and leaves it with size 0 emits only the old level's update:
    it ends the event, so it carries the event's F_LAST."""
    bid, ask = ord("B"), ord("A")
    events = [
        (7, 1, "A", bid, 100 * _TICK, 5, F_LAST),
        (7, 1, "M", bid, 101 * _TICK, 3, F_LAST),  # moves: two records, F_LAST on the second
        (7, 1, "M", ask, 102 * _TICK, 0, F_LAST),  # moves away with size 0: one record
    ]
    data, _, _ = encode_stream(events, 2)
    decoder = DbnDecoder()
    decoder.write(data)
    records = decoder.finish().records
    assert records[["sequence", "price", "size"]].tolist() == [
        (0, 100 * _TICK, 5.0), (1, 100 * _TICK, 0.0), (1, 101 * _TICK, 3.0), (2, 101 * _TICK, 0.0)]
    assert_last_marks_events(events, records)
    assert decoder.book.orders == 0 and decoder.book.levels == 0
