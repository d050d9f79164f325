"""A synthetic MDP 3.0 capture written with our schema-driven encoder: the sample market the
repository ships instead of CME's captures (which carry no licence).

One channel, feeds A and B carrying identical packets, an instrument definition loop (54 for
each future, plus one 55 option and one 56 spread), a ChannelReset4 first, then seeded random
events: MBP book updates (46) kept consistent with a level book, trade summaries (48) with
aggressor and order fills, volume (37), a security status (30), and MBO order updates (47, and
order entries in 46 adding an order at the price of the MD entry they reference). The orders
come from a second random stream, so the MBP events are the same with or without them, and
they are their own market: their levels are not the MBP levels.
The generator also returns what it sent, so tests compare the plant with an answer that does
not come from our decoder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from streamctl.ingest.vendors.cme.book import CHANGE, DELETE, NEW
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.pcap import Datagram
from streamctl.ingest.vendors.cme.schema import Schema
from streamctl.shm.records import Side

__all__ = ["Synthetic", "Trade", "generate", "FEEDS", "INSTRUMENTS"]

FEEDS = {
    "incremental_a": ("224.0.31.1", 14310), "incremental_b": ("224.0.32.1", 15310),
    "definition_a": ("224.0.31.2", 14311), "recovery_a": ("224.0.31.3", 14312),
    "recovery_b": ("224.0.32.3", 15312),
}
"""The synthetic channel's multicast groups (CME's convention: A in 224.0.31.x, B in 224.0.32.x)."""

INSTRUMENTS = {"ESZ6": (1001, 5_000_000_000_000, 250_000_000), "NQZ6": (1002, 18_000_000_000_000, 250_000_000)}
"""symbol -> (SecurityID, start price, tick), prices in 1e-9."""

_START_NS = 1_795_876_200_000_000_000  # 2026-11-28T14:30:00Z
_EOE, _LAST_TRADE, _LAST_QUOTE, _LAST_VOLUME = 0x80, 0x01, 0x04, 0x02


@dataclass(frozen=True)
class Trade:
    symbol: str
    ts_event: int
    price: int
    size: int
    aggressor: int


@dataclass
class Synthetic:
    datagrams: list[Datagram]
    """Capture order: definitions first, then each incremental packet on A then B."""
    trades: list[Trade]
    books: dict[str, dict[tuple[int, bool], list[list[int]]]]
    """Each instrument's book after the last event: (side, implied) -> [[price, size], ...], best
    first (as `Channel.levels` gives it; the generator sends no implied levels)."""
    orders: dict[str, dict[int, tuple[int, int, int]]]
    """Each instrument's resting orders after the last event: OrderID -> (side, price, quantity)."""
    last_seq: int
    definitions: dict[str, int] = field(default_factory=dict)


def _definitions(schema: Schema, ts: int) -> list[bytes]:
    msgs = []
    total = len(INSTRUMENTS) + 2
    for symbol, (sid, _, tick) in INSTRUMENTS.items():
        msgs.append(encode_message(schema, 54, {
            "MatchEventIndicator": _EOE, "TotNumReports": total, "SecurityUpdateAction": b"A", "LastUpdateTime": ts,
            "MDSecurityTradingStatus": 17, "ApplID": 310, "MarketSegmentID": 64, "UnderlyingProduct": 14,
            "SecurityExchange": b"XCME", "SecurityGroup": symbol[:2].encode(), "Asset": symbol[:2].encode(),
            "Symbol": symbol.encode(), "SecurityID": sid, "SecurityType": b"FUT", "CFICode": b"FFIXSX",
            "MaturityMonthYear.year": 2026, "MaturityMonthYear.month": 12, "Currency": b"USD", "SettlCurrency": b"USD",
            "MatchAlgorithm": b"F", "MinTradeVol": 1, "MaxTradeVol": 3000, "MinPriceIncrement": tick,
            "DisplayFactor": 1_000_000_000, "UnitOfMeasure": b"IPNT", "TradingReferenceDate": 20_420,
        }, {"NoEvents": [{"EventType": 5, "EventTime": ts - 86_400_000_000_000}],
            "NoMDFeedTypes": [{"MDFeedType": b"GBX", "MarketDepth": 10}, {"MDFeedType": b"GBI", "MarketDepth": 2}],
            "NoInstAttrib": [{"InstAttribValue": 1}], "NoLotTypeRules": [{"LotType": 2, "MinLotSize": 10000}]}))
    msgs.append(encode_message(schema, 55, {
        "MatchEventIndicator": _EOE, "TotNumReports": total, "SecurityUpdateAction": b"A", "LastUpdateTime": ts,
        "Symbol": b"ESZ6 C5000", "SecurityID": 2001, "SecurityType": b"OOF", "PutOrCall": 1,
        "StrikePrice": 5_000_000_000_000, "Currency": b"USD", "MinPriceIncrement": 50_000_000,
        "DisplayFactor": 1_000_000_000, "MaturityMonthYear.year": 2026, "MaturityMonthYear.month": 12,
    }, {"NoUnderlyings": [{"UnderlyingSecurityID": 1001, "UnderlyingSymbol": b"ESZ6"}]}))
    msgs.append(encode_message(schema, 56, {
        "MatchEventIndicator": _EOE, "TotNumReports": total, "SecurityUpdateAction": b"A", "LastUpdateTime": ts,
        "Symbol": b"ESZ6-ESH7", "SecurityID": 3001, "SecurityType": b"FUT", "Currency": b"USD",
        "MinPriceIncrement": 50_000_000, "DisplayFactor": 1_000_000_000,
    }, {"NoLegs": [{"LegSecurityID": 1001, "LegSide": 1, "LegRatioQty": 1},
                   {"LegSecurityID": 1004, "LegSide": 2, "LegRatioQty": 1}]}))
    return msgs


def _book_event(rng: random.Random, book: dict[tuple[int, bool], list[list[int]]], mid: int, tick: int, sid: int,
                rpt: int) -> dict | None:
    """One valid MBP entry for `book` (and applies it to its list of levels), or None."""
    side = rng.choice((Side.BID, Side.ASK))
    levels = book[(side, False)]
    sign = -1 if side == Side.BID else 1
    choice = rng.random()
    if len(levels) < 5 or (choice < 0.35 and len(levels) < 10):
        taken = {p for p, _ in levels}
        for _ in range(20):
            price = mid + sign * tick * rng.randint(1, 12)
            if price not in taken:
                break
        else:
            return None
        level = 1 + sum(1 for p, _ in levels if (p > price if side == Side.BID else p < price))
        if level > 10:
            return None
        action, size = NEW, rng.randint(1, 200)
    elif choice < 0.8:
        level = rng.randint(1, len(levels))
        action, price, size = CHANGE, levels[level - 1][0], rng.randint(1, 200)
    else:
        level = rng.randint(1, len(levels))
        action, price, size = DELETE, levels[level - 1][0], levels[level - 1][1]
    if action == NEW:
        levels.insert(level - 1, [price, size])
    elif action == CHANGE:
        levels[level - 1] = [price, size]
    else:
        del levels[level - 1]
    return {"MDEntryPx": price, "MDEntrySize": size, "SecurityID": sid, "RptSeq": rpt, "NumberOfOrders": 1,
            "MDPriceLevel": level, "MDUpdateAction": action, "MDEntryType": b"0" if side == Side.BID else b"1"}


def _order_event(rng: random.Random, orders: dict[int, tuple[int, int, int]], mid: int, tick: int, sid: int,
                 next_id: int) -> dict:
    """One valid order update for `orders` (and applies it): a New while the book is thin, else a
    New (up to 40 orders), a Change (quantity, sometimes price) or a Delete of a resting order."""
    choice = rng.random()
    if len(orders) < 6 or (choice < 0.4 and len(orders) < 40):
        side: int = rng.choice((Side.BID, Side.ASK))
        price = mid + (-1 if side == Side.BID else 1) * tick * rng.randint(1, 8)
        order_id, action, qty = next_id, NEW, rng.randint(1, 50)
    else:
        order_id = rng.choice(sorted(orders))
        side, price, qty = orders[order_id]
        if choice < 0.7:
            action, qty = CHANGE, rng.randint(1, 50)
            moved = price + tick * rng.choice((-1, 1))
            if rng.random() < 0.3 and (moved < mid if side == Side.BID else moved > mid):  # never crossing
                price = moved
        else:
            action = DELETE
    if action == DELETE:
        del orders[order_id]
    else:
        orders[order_id] = (side, price, qty)
    return {"OrderID": order_id, "MDOrderPriority": next_id, "MDEntryPx": price, "MDDisplayQty": qty,
            "SecurityID": sid, "MDUpdateAction": action, "MDEntryType": b"0" if side == Side.BID else b"1"}


def generate(schema: Schema, *, packets: int = 2000, seed: int = 7, interval_ms: int = 90,
             first_seq: int = 1, feeds: dict[str, tuple[str, int]] = FEEDS) -> Synthetic:
    """A deterministic capture of `packets` incremental packets (each on A and B), sent to `feeds`."""
    rng = random.Random(seed)
    orng = random.Random(seed + 1)  # the orders' own stream: the MBP events do not depend on them
    orders: dict[str, dict[int, tuple[int, int, int]]] = {s: {} for s in INSTRUMENTS}
    next_order = 1
    books: dict[str, dict[tuple[int, bool], list[list[int]]]] = {
        s: {(int(side), implied): [] for side in (Side.BID, Side.ASK) for implied in (False, True)} for s in INSTRUMENTS}
    rpt = dict.fromkeys(INSTRUMENTS, 0)
    volume = dict.fromkeys(INSTRUMENTS, 0)
    mids = {s: v[1] for s, v in INSTRUMENTS.items()}
    trades: list[Trade] = []
    out: list[Datagram] = []
    defs = _definitions(schema, _START_NS)
    for i, msg in enumerate(defs):
        out.append(Datagram(_START_NS, *feeds["definition_a"], encode_packet(i + 1, _START_NS, [msg])))
    order_id = 1_000_000
    ts = _START_NS
    for n in range(packets):
        seq = first_seq + n
        ts += rng.randint(1, 2 * interval_ms) * 1_000_000
        msgs: list[bytes] = []
        if n == 0:
            msgs.append(encode_message(schema, 4, {"TransactTime": ts, "MatchEventIndicator": _EOE},
                                       {"NoMDEntries": [{"ApplID": 310}]}))
        symbol = rng.choice(list(INSTRUMENTS))
        sid, _, tick = INSTRUMENTS[symbol]
        if n % 7 == 3:  # a trade: summary with aggressor and order fills, then volume, then the book
            side = rng.choice((1, 2))
            opposite = Side.ASK if side == 1 else Side.BID
            top = books[symbol][(opposite, False)]
            price = top[0][0] if top else mids[symbol]
            size = rng.randint(1, 20)
            rpt[symbol] += 1
            trades.append(Trade(symbol, ts, price, size, side))
            msgs.append(encode_message(schema, 48, {"TransactTime": ts, "MatchEventIndicator": _LAST_TRADE}, {
                "NoMDEntries": [{"MDEntryPx": price, "MDEntrySize": size, "SecurityID": sid, "RptSeq": rpt[symbol],
                                 "NumberOfOrders": 2, "AggressorSide": side, "MDUpdateAction": 0,
                                 "MDTradeEntryID": 500 + n}],
                "NoOrderIDEntries": [{"OrderID": order_id, "LastQty": size}, {"OrderID": order_id + 1, "LastQty": size}]}))
            order_id += 2
            rpt[symbol] += 1
            volume[symbol] += size
            msgs.append(encode_message(schema, 37, {"TransactTime": ts, "MatchEventIndicator": _LAST_VOLUME}, {
                "NoMDEntries": [{"MDEntrySize": volume[symbol], "SecurityID": sid, "RptSeq": rpt[symbol],
                                 "MDUpdateAction": 0}]}))
        entries: list[dict] = []
        for _ in range(rng.randint(1, 3)):
            entry = _book_event(rng, books[symbol], mids[symbol], tick, sid, rpt[symbol] + 1)
            if entry:
                rpt[symbol] += 1
                entries.append(entry)
        if entries:
            order_entries = []
            if orng.random() < 0.3:  # an order added at the first MD entry's price (MBO inside MBP)
                side = Side.BID if entries[0]["MDEntryType"] == b"0" else Side.ASK
                qty = orng.randint(1, 50)
                orders[symbol][next_order] = (side, entries[0]["MDEntryPx"], qty)
                order_entries.append({"OrderID": next_order, "MDOrderPriority": next_order, "MDDisplayQty": qty,
                                      "ReferenceID": 1, "OrderUpdateAction": NEW})
                next_order += 1
            msgs.append(encode_message(schema, 46, {"TransactTime": ts, "MatchEventIndicator": _LAST_QUOTE | _EOE},
                                       {"NoMDEntries": entries, "NoOrderIDEntries": order_entries}))
        elif msgs:
            msgs[-1] = msgs[-1][:18] + bytes([msgs[-1][18] | _EOE]) + msgs[-1][19:]
        if orng.random() < 0.6:
            updates = []
            for _ in range(orng.randint(1, 3)):
                updates.append(_order_event(orng, orders[symbol], mids[symbol], tick, sid, next_order))
                next_order += 1
            msgs.append(encode_message(schema, 47, {"TransactTime": ts, "MatchEventIndicator": _EOE},
                                       {"NoMDEntries": updates}))
        if n % 97 == 50:  # a status message (decoded, not converted: docs/cme.md)
            msgs.append(encode_message(schema, 30, {
                "TransactTime": ts, "SecurityGroup": symbol[:2].encode(), "Asset": symbol[:2].encode(),
                "SecurityID": sid, "TradeDate": 20_420, "MatchEventIndicator": _EOE, "SecurityTradingStatus": 17,
                "HaltReason": 0, "SecurityTradingEvent": 0}))
        if not msgs:
            msgs.append(encode_message(schema, 12, {}))
        payload = encode_packet(seq, ts, msgs)
        out.append(Datagram(ts, *feeds["incremental_a"], payload))
        out.append(Datagram(ts + 1000, *feeds["incremental_b"], payload))
    return Synthetic(out, trades, books, orders, first_seq + packets - 1,
                     {s: v[0] for s, v in INSTRUMENTS.items()})
