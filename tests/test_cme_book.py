"""CME's level-indexed MBP actions turned into price-keyed book records, and the channel's event,
reset and snapshot rules, on packets written by our schema-driven encoder."""

from __future__ import annotations

import numpy as np
import pytest

from streamctl.ingest.vendors.cme.book import CHANGE, DELETE, DELETE_FROM, DELETE_THRU, NEW, OVERLAY
from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.shm.records import Flag, Kind, Side

SCHEMA = load_schema()
BID, ASK = int(Side.BID), int(Side.ASK)


def _changes(out) -> list[tuple]:
    return [(int(r["side"]), int(r["price"]), float(r["size"])) for r in out]


def _channel(prices: list[int], *, depth: int = 10, merge: bool = False) -> Channel:
    """Instrument 7's bid side holding `prices` (sizes 10, 11, ...) at levels 1, 2, ..."""
    channel = Channel(SCHEMA, {7: 1}.get, depth=depth, merge_implied=merge)
    _apply(channel, _packet(1, _book46(1, 0x80, *(_entry(7, i + 1, i + 1, p, 10 + i) for i, p in enumerate(prices)))))
    return channel


def _one(channel: Channel, action: int, level: int, price: int, size: int, kind: bytes = b"0"):
    return _apply(channel, _packet(2, _book46(2, 0x80, _entry(7, 99, level, price, size, action, kind))))


def test_new_inserts_and_pushes_the_last_level_out_past_the_depth():
    channel = _channel([100, 99, 98], depth=3)
    assert _changes(_one(channel, NEW, 2, 995, 7)) == [(BID, 995, 7.0), (BID, 98, 0.0)]
    assert channel.levels(7)[(BID, False)] == [[100, 10], [995, 7], [99, 11]]


@pytest.mark.parametrize(("action", "level", "price", "size", "changes", "left"), [
    (CHANGE, 2, 99, 50, [(BID, 99, 50.0)], [[100, 10], [99, 50], [98, 12]]),
    (DELETE, 1, 100, 0, [(BID, 100, 0.0)], [[99, 11], [98, 12]]),
    (DELETE_THRU, 1, 0, 0, [(BID, 100, 0.0), (BID, 99, 0.0), (BID, 98, 0.0)], []),
    (DELETE_FROM, 2, 0, 0, [(BID, 100, 0.0), (BID, 99, 0.0)], [[98, 12]]),
    (OVERLAY, 1, 101, 4, [(BID, 100, 0.0), (BID, 101, 4.0)], [[101, 4], [99, 11], [98, 12]]),
], ids=["change", "delete", "delete-thru", "delete-from", "overlay"])
def test_level_actions_publish_the_prices_whose_size_changed(action, level, price, size, changes, left):
    channel = _channel([100, 99, 98])
    assert _changes(_one(channel, action, level, price, size)) == changes
    assert channel.levels(7)[(BID, False)] == left


def test_an_entry_past_the_side_is_refused():
    channel = _channel([100])
    assert _one(channel, CHANGE, 3, 98, 1) is None
    assert _apply(channel, _packet(3, _book46(3, 0x80, _entry(7, 100, 3, 98, 1)))) is None  # a hole at level 2
    assert channel.rejected == 2 and channel.levels(7)[(BID, False)] == [[100, 10]]


def test_implied_levels_are_kept_apart_or_merged():
    apart, merged = _channel([100, 99]), _channel([100, 99], merge=True)
    assert _one(apart, NEW, 1, 100, 5, b"E") is None
    assert apart.levels(7)[(BID, True)] == [[100, 5]]
    assert _changes(_one(merged, NEW, 1, 100, 5, b"E")) == [(BID, 100, 15.0)]
    out = _apply(merged, _packet(3, _book46(3, 0x80, _entry(7, 100, 1, 100, 10, DELETE))))
    assert _changes(out) == [(BID, 100, 5.0)]  # the implied part stays


def _packet(seq: int, *messages: bytes) -> bytes:
    return encode_packet(seq, 1_000 + seq, messages)


def _book46(ts: int, mei: int, *entries: dict) -> bytes:
    return encode_message(SCHEMA, 46, {"TransactTime": ts, "MatchEventIndicator": mei}, {"NoMDEntries": list(entries)})


def _entry(sid: int, rpt: int, level: int, price: int, size: int, action: int = NEW, kind: bytes = b"0") -> dict:
    return {"MDEntryPx": price, "MDEntrySize": size, "SecurityID": sid, "RptSeq": rpt, "NumberOfOrders": 1,
            "MDPriceLevel": level, "MDUpdateAction": action, "MDEntryType": kind}


def _apply(channel: Channel, *packets: bytes) -> np.ndarray | None:
    channel.apply(Decoder(SCHEMA).decode(list(packets)))
    return channel.take(0)


def test_records_wait_for_end_of_event_and_the_last_of_each_instrument_is_flagged():
    gaps: list = []
    channel = Channel(SCHEMA, {7: 1, 8: 2}.get, on_instrument_gap=lambda *g: gaps.append(g))
    # one event spread over two packets: nothing is published before its EndOfEvent
    assert _apply(channel, _packet(1, _book46(5, 0x04, _entry(7, 1, 1, 100_000_000_000, 3)))) is None
    out = _apply(channel, _packet(2, _book46(5, 0x84, _entry(8, 1, 1, 200_000_000_000, 4),
                                             _entry(7, 2, 1, 101_000_000_000, 1, kind=b"1"))))
    assert out["instrument_id"].tolist() == [1, 2, 1]
    assert out["kind"].tolist() == [Kind.BOOK] * 3 and out["side"].tolist() == [BID, BID, ASK]
    assert out["flags"].tolist() == [0, Flag.LAST, Flag.LAST]
    assert out["price"].tolist() == [100_000_000_000, 200_000_000_000, 101_000_000_000]
    assert out["sequence"].tolist() == [1, 2, 2] and out["ts_event"].tolist() == [5, 5, 5]
    # an entry already applied (RptSeq at or below the last) is skipped; a jump is an instrument gap
    out = _apply(channel, _packet(3, _book46(6, 0x84, _entry(7, 2, 1, 99, 9), _entry(7, 5, 1, 102_000_000_000, 2))))
    assert out["price"].tolist() == [102_000_000_000] and gaps == [(7, 3, 5)]


def test_channel_reset_clears_every_book():
    channel = Channel(SCHEMA, {7: 1, 8: 2}.get)
    _apply(channel, _packet(1, _book46(5, 0x84, _entry(7, 1, 1, 100, 3), _entry(8, 1, 1, 200, 4))))
    reset = encode_message(SCHEMA, 4, {"TransactTime": 9, "MatchEventIndicator": 0x80}, {"NoMDEntries": [{"ApplID": 310}]})
    out = _apply(channel, _packet(2, reset))
    assert out["kind"].tolist() == [Kind.RESET, Kind.RESET] and sorted(out["instrument_id"].tolist()) == [1, 2]
    assert not any(levels for sid in (7, 8) for levels in channel.levels(sid).values())
    # RptSeq starts over after a reset
    out = _apply(channel, _packet(3, _book46(10, 0x84, _entry(7, 1, 1, 300, 1))))
    assert out["price"].tolist() == [300]


def test_legacy_prices_are_scaled_from_their_exponent():
    channel = Channel(SCHEMA, {7: 1}.get)
    legacy = encode_message(SCHEMA, 32, {"TransactTime": 5, "MatchEventIndicator": 0x80},
                            {"NoMDEntries": [_entry(7, 1, 1, 40_275_000, 2)]}, version=6)
    out = _apply(channel, _packet(1, legacy))
    assert out["price"].tolist() == [4_027_500_000]  # PRICENULL (exponent -7) 4.0275 -> 1e-9 units


def test_transact_time_going_back_is_counted_and_applied():
    channel = Channel(SCHEMA, {7: 1}.get)
    out = _apply(channel, _packet(1, _book46(10, 0x80, _entry(7, 1, 1, 100, 3))),
                 _packet(2, _book46(8, 0x80, _entry(7, 2, 1, 101, 4, CHANGE))),
                 _packet(3, _book46(9, 0x80, _entry(7, 3, 1, 102, 5, CHANGE))),
                 _packet(4, _book46(11, 0x80, _entry(7, 4, 1, 103, 6, CHANGE))))
    assert channel.ts_regressions == 2  # 8 and 9 come after 10
    assert out["ts_event"].tolist() == [10, 8, 8, 9, 9, 11, 11]
