"""CME order updates (47, the order entries of 46, snapshots 53) turned into price-level records,
on packets written by our schema-driven encoder (random streams against a plain-Python
reference: `test_cme_channel.py`)."""

from __future__ import annotations

import numpy as np

from streamctl.ingest.vendors.cme.book import CHANGE, DELETE, NEW
from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.shm.records import Flag, Kind, Side

SCHEMA = load_schema()
BID, ASK = int(Side.BID), int(Side.ASK)


def _packet(seq: int, *messages: bytes) -> bytes:
    return encode_packet(seq, 1_000 + seq, messages)


def _order(order_id: int, sid: int, price: int, qty: int, action: int = NEW, kind: bytes = b"0") -> dict:
    return {"OrderID": order_id, "MDOrderPriority": order_id, "MDEntryPx": price, "MDDisplayQty": qty,
            "SecurityID": sid, "MDUpdateAction": action, "MDEntryType": kind}


def _orders47(ts: int, mei: int, *orders: dict) -> bytes:
    return encode_message(SCHEMA, 47, {"TransactTime": ts, "MatchEventIndicator": mei}, {"NoMDEntries": list(orders)})


def _apply(channel: Channel, *packets: bytes) -> np.ndarray | None:
    channel.apply(Decoder(SCHEMA).decode(list(packets)))
    return channel.take(0)


def _rows(out: np.ndarray) -> list[tuple]:
    return [(int(r["instrument_id"]), int(r["kind"]), int(r["side"]), int(r["price"]), float(r["size"]), int(r["flags"]))
            for r in out]


def test_order_updates_become_level_totals_published_at_end_of_event():
    channel = Channel(SCHEMA, {7: 1, 8: 2}.get, mbo=True)
    assert _apply(channel, _packet(1, _orders47(5, 0, _order(11, 7, 100, 3), _order(12, 7, 100, 4)))) is None
    out = _apply(channel, _packet(2, _orders47(5, 0x80, _order(13, 8, 200, 5, kind=b"1"))))
    assert _rows(out) == [(1, Kind.BOOK, BID, 100, 3.0, 0), (1, Kind.BOOK, BID, 100, 7.0, Flag.LAST),
                          (2, Kind.BOOK, ASK, 200, 5.0, Flag.LAST)]
    # a change of price moves the order (two levels), a delete removes it whatever quantity it names
    out = _apply(channel, _packet(3, _orders47(6, 0x80, _order(11, 7, 101, 2, CHANGE), _order(12, 7, 0, 0, DELETE))))
    assert _rows(out) == [(1, Kind.BOOK, BID, 100, 4.0, 0), (1, Kind.BOOK, BID, 101, 2.0, 0),
                          (1, Kind.BOOK, BID, 100, 0.0, Flag.LAST)]
    # an update that does not fit the orders is counted and skipped
    out = _apply(channel, _packet(4, _orders47(7, 0x80, _order(99, 7, 1, 1, DELETE), _order(13, 8, 1, 1, NEW))))
    assert out is None and channel.rejected == 2


def test_order_entries_of_46_take_price_side_and_instrument_from_their_md_entry():
    channel = Channel(SCHEMA, {7: 1}.get, mbo=True)
    msg = encode_message(SCHEMA, 46, {"TransactTime": 5, "MatchEventIndicator": 0x80}, {
        "NoMDEntries": [{"MDEntryPx": 100, "MDEntrySize": 3, "SecurityID": 7, "RptSeq": 1, "MDPriceLevel": 1,
                         "MDUpdateAction": NEW, "MDEntryType": b"0"},
                        {"MDEntryPx": 300, "MDEntrySize": 2, "SecurityID": 7, "RptSeq": 2, "MDPriceLevel": 1,
                         "MDUpdateAction": NEW, "MDEntryType": b"1"}],
        "NoOrderIDEntries": [{"OrderID": 21, "MDDisplayQty": 2, "ReferenceID": 2, "OrderUpdateAction": NEW},
                             {"OrderID": 22, "MDDisplayQty": 1, "ReferenceID": 3, "OrderUpdateAction": NEW}]})
    out = _apply(channel, _packet(1, msg))
    assert _rows(out) == [(1, Kind.BOOK, ASK, 300, 2.0, Flag.LAST)]  # the MBP levels are not published
    assert channel.rejected == 1  # ReferenceID 3 names no entry


def test_an_order_snapshot_rebuilds_the_book_and_covers_the_updates_it_holds():
    channel = Channel(SCHEMA, {7: 1}.get, mbo=True)
    _apply(channel, _packet(1, _orders47(5, 0x80, _order(11, 7, 100, 3))))
    channel.invalidate([7], 6)
    snapshot = encode_message(SCHEMA, 53, {"LastMsgSeqNumProcessed": 2, "TotNumReports": 1, "SecurityID": 7,
                                           "NoChunks": 1, "CurrentChunk": 1, "TransactTime": 7}, {"NoMDEntries": [
        {"OrderID": 11, "MDOrderPriority": 1, "MDEntryPx": 100, "MDDisplayQty": 3, "MDEntryType": b"0"},
        {"OrderID": 12, "MDOrderPriority": 2, "MDEntryPx": 105, "MDDisplayQty": 4, "MDEntryType": b"0"}]})
    dec = Decoder(SCHEMA).decode([_packet(1, snapshot)])
    channel.rebuild_orders(7, 2, dec.group(53, "NoMDEntries")[1], 7)
    out = channel.take(0)
    assert _rows(out) == [(1, Kind.RESET, 0, 0, 0.0, Flag.LAST), (1, Kind.RESET, 0, 0, 0.0, Flag.SNAPSHOT),
                          (1, Kind.BOOK, BID, 100, 3.0, Flag.SNAPSHOT),
                          (1, Kind.BOOK, BID, 105, 4.0, Flag.SNAPSHOT | Flag.LAST)]
    # packet 2 (order 12 added) is in the snapshot: skipped, not applied twice; packet 3 is applied
    out = _apply(channel, _packet(2, _orders47(6, 0x80, _order(12, 7, 105, 4))),
                 _packet(3, _orders47(8, 0x80, _order(12, 7, 0, 0, DELETE))))
    assert _rows(out) == [(1, Kind.BOOK, BID, 105, 0.0, Flag.LAST)] and channel.rejected == 0


def test_a_zero_quantity_order_leaving_after_its_level_emptied_is_no_error():
    channel = Channel(SCHEMA, {7: 1}.get, mbo=True)
    _apply(channel, _packet(1, _orders47(5, 0x80, _order(11, 7, 100, 3), _order(12, 7, 100, 0))))
    out = _apply(channel, _packet(2, _orders47(6, 0x80, _order(11, 7, 0, 0, DELETE), _order(12, 7, 0, 0, DELETE))))
    assert _rows(out) == [(1, Kind.BOOK, BID, 100, 0.0, 0), (1, Kind.BOOK, BID, 100, 0.0, Flag.LAST)]
    assert channel.rejected == 0 and channel.resting_orders() == []
