"""The pieces of the `ibkr` vendor that need no socket: framing, contracts, depth rows, pacing,
market-data decoding, options."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.contracts import Contract, decode_details, encode_details, front_month
from streamctl.ingest.vendors.ibkr.options import LOCAL_SYMBOL, Options
from streamctl.ingest.vendors.ibkr.pacing import Pacer
from streamctl.ingest.vendors.ibkr.parsing import DepthRows, MarketData, Subscription
from streamctl.ingest.vendors.ibkr.venue.streams import price_text
from streamctl.ingest.vendors.ibkr.venue.tape import contract_for
from streamctl.shm.records import UNDEF_PRICE, Flag, Kind, Side

ES = Contract(con_id=495512563, symbol="ES", sec_type="FUT", local_symbol="ESZ4", expiry="20241220", exchange="CME",
              trading_class="ES", multiplier="50", min_tick=0.25, long_name="E-mini S&P 500")


def _fields(*values: object) -> list[bytes]:
    return api.encode(*values)[4:].split(b"\0")[:-1]


def test_frames_cut_anywhere_come_out_whole():
    stream = api.encode(99, 1, 2, 1719878400, "5528.75", "2", 0, "CME", "") + api.encode(49, 1, 1719878401)
    for cut in range(len(stream) + 1):
        reader = api.FrameReader()
        reader.feed(stream[:cut])
        got = reader.messages()
        reader.feed(stream[cut:])
        got += reader.messages()
        assert got == [[b"99", b"1", b"2", b"1719878400", b"5528.75", b"2", b"0", b"CME", b""], [b"49", b"1", b"1719878401"]]
        assert reader.pending == 0


def test_an_oversized_frame_is_refused():
    reader = api.FrameReader()
    reader.feed((api.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(api.FrameError, match="over the 16777215 limit"):
        reader.messages()


@pytest.mark.parametrize(("text", "expected"), [(b"v157..178", (157, 178)), (b"v176..178 +PACEAPI", (176, 178)),
                                                (b"v100", (100, 100))])
def test_version_ranges(text, expected):
    assert api.parse_version_range(text) == expected
    assert api.handshake(164, 178) == b"API\0" + b"\0\0\0\x09v164..178"


def test_contract_details_round_trip_the_layout_of_versions_164_to_178():
    req_id, back = decode_details(_fields(*encode_details(17, ES)))
    assert req_id == 17 and back == ES
    with pytest.raises(ValueError, match="at least 31 fields"):
        decode_details(_fields(10, 17, "ES"))


def test_front_month_is_the_earliest_expiry_unless_a_month_is_named():
    z4, h5, m5 = (Contract(con_id=i, symbol="ES", sec_type="FUT", local_symbol=s, expiry=e)
                  for i, (s, e) in enumerate([("ESZ4", "20241220"), ("ESH5", "20250321"), ("ESM5", "20250620")]))
    assert front_month([h5, m5, z4], None) is z4
    assert front_month([h5, m5, z4], "202506") is m5
    assert front_month([h5, m5, z4], "202409") is None


@pytest.mark.parametrize(("symbol", "local"), [("ESU4", True), ("ESZ24", True), ("6EH5", True), ("ES", False),
                                               ("AAPL", False), ("NQ", False)])
def test_local_symbols_name_one_contract(symbol, local):
    assert (LOCAL_SYMBOL.match(symbol) is not None) == local


def test_the_venue_lists_futures_with_their_third_friday_and_stocks_on_smart():
    july_2024 = 1_719_878_400_000_000_000
    esu4 = contract_for("ESU4", july_2024)
    assert (esu4.symbol, esu4.sec_type, esu4.expiry, esu4.exchange) == ("ES", "FUT", "20240920", "CME")
    assert contract_for("NQH5", july_2024).expiry == "20250321"
    nvda = contract_for("NVDA", july_2024)
    assert (nvda.sec_type, nvda.exchange, nvda.expiry, nvda.topic_symbol) == ("STK", "SMART", "", "NVDA")
    assert contract_for("ESU4", july_2024).con_id == esu4.con_id  # stable across runs


@pytest.mark.parametrize(("price", "text"), [(5528_750_000_000, "5528.75"), (189_530_000_000, "189.53"),
                                             (-1_250_000_000, "-1.25"), (7_000_000_000, "7"), (1, "0.000000001")])
def test_prices_are_printed_exactly(price, text):
    assert price_text(price) == text


def test_depth_rows_turn_into_price_levels():
    rows = DepthRows()
    assert rows.apply(0, 0, 1, 100.0, 5) == [(100.0, 5)]
    assert rows.apply(1, 0, 1, 99.5, 7) == [(99.5, 7)]
    assert rows.apply(0, 1, 1, 100.25, 2) == [(100.0, 0.0), (100.25, 2)]  # row 0 moved to a new price
    assert rows.apply(1, 1, 1, 99.5, 9) == [(99.5, 9)]
    assert rows.apply(1, 2, 1, 0, 0) == [(99.5, 0.0)]
    assert rows.bids == [[100.25, 2]] and rows.asks == []
    for bad in [(5, 2, 1, 0, 0), (0, 1, 0, 1, 1), (0, 7, 1, 1, 1), (0, 0, 3, 1, 1)]:
        with pytest.raises(ValueError):
            rows.apply(*bad)


def test_market_data_decodes_ticks_and_depth_into_records():
    md = MarketData()
    md.subs[1] = Subscription(41, "trades")
    md.subs[2] = Subscription(41, "quotes")
    md.subs[3] = Subscription(41, "depth")
    md.tick_by_tick(_fields(99, 1, 2, 1719878400, "5528.75", "2", 0, "CME", ""))
    md.tick_by_tick(_fields(99, 2, 3, 1719878401, "5528.5", "0", "12", "0", 0))  # no ask
    md.tick_by_tick(_fields(99, 9, 2, 1719878402, "1", "1", 0, "", ""))  # cancelled request
    md.depth(_fields(12, 1, 3, 0, 0, 1, "5528.5", "12"), 1_719_878_402_500_000_000)
    md.depth(_fields(13, 1, 3, 0, "CME", 0, 0, "5528.75", "4", 1), 1_719_878_402_600_000_000)
    out = md.take(1_719_878_403_000_000_000)
    assert out["kind"].tolist() == [Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.BOOK]
    assert out["price"].tolist() == [5528_750_000_000, 5528_500_000_000, 5528_500_000_000, 5528_750_000_000]
    assert out["price2"][1] == UNDEF_PRICE and out["size"][1] == 12 and out["size2"][1] == 0
    assert out["ts_event"].tolist()[:2] == [1719878400 * 10**9, 1719878401 * 10**9]
    assert out["side"].tolist() == [Side.NONE, Side.NONE, Side.BID, Side.ASK]
    assert [bool(f & Flag.LAST) for f in out["flags"]] == [True, True, False, True]  # the book is whole at the end
    assert (out["instrument_id"] == 41).all() and (out["ts_recv"] == 1_719_878_403_000_000_000).all()
    assert md.unknown_request == 1 and len(md.take(0)) == 0
    for bad in [_fields(99, 1, 2, "x", "1", "1", 0, "", ""), _fields(99, 1, 7, 1, "1"), _fields(99, 1, 2, 1, "1")]:
        with pytest.raises((ValueError, IndexError)):
            md.tick_by_tick(bad)
    assert len(md.take(0)) == 0  # nothing staged from a malformed message


def test_the_pacer_spaces_messages_evenly():
    now = [0.0]
    pacer = Pacer(45, clock=lambda: now[0])
    sent = []
    while now[0] < 2.0:
        if pacer.wait() == 0.0:
            pacer.sent()
            sent.append(now[0])
        now[0] += 0.001
    assert 89 <= len(sent) <= 91
    assert max(sum(1 for t in sent if start <= t < start + 1.0) for start in np.arange(0, 1.0, 0.01)) <= 46


def test_options_are_checked_with_the_field_named():
    ok = msgspec.convert({"port": 4002}, Options)
    assert ok.check() is None and ok.sec_type == "FUT" and ok.max_messages_per_s == 45
    assert msgspec.convert({"liveness_timeout_s": 5, "probe_interval_s": 10}, Options).check()[0] == "liveness_timeout_s"
    assert msgspec.convert({"trades": False, "quotes": False}, Options).check()[0] == "trades"
    assert msgspec.convert({"sec_type": "STK", "expiry": "202412"}, Options).check()[0] == "expiry"
    with pytest.raises(msgspec.ValidationError, match=r"\$.max_messages_per_s"):
        msgspec.convert({"max_messages_per_s": 60}, Options)
    with pytest.raises(msgspec.ValidationError, match=r"\$.expiry"):
        msgspec.convert({"expiry": "2024-12"}, Options)


def test_the_compiled_scan_decodes_as_the_python_path_and_keeps_arrival_order():
    messages = [
        (99, 1, 2, 1719878400, "5528.75", "2", 0, "CME", ""),
        (12, 1, 3, 0, 0, 1, "5528.5", "12"),
        (99, 2, 3, 1719878401, "5528.5", "5529", "12", "0.5", 3),
        (99, 1, 1, 1719878402, "-0.000000001", "1000000", 2, "", ""),
        (99, 1, 2, 1719878402, "1e3", "1", 0, "", ""),  # an exponent: left to Python's float()
        (99, 1, 2, 1719878402, "1234567.1234567891", "1", 0, "", ""),  # 17 digits: Python's float() too
        (99, 2, 4, 1719878403, "5528.6"),  # MidPoint: ignored
        (99, 9, 2, 1719878404, "1", "1", 0, "", ""),  # not our request
        (12, 1, 3, 0, 1, 1, "5528.25", "3"),
    ]
    stream = b"".join(api.encode(*m) for m in messages)

    def subscribed() -> MarketData:
        md = MarketData()
        md.subs[1] = Subscription(41, "trades")
        md.subs[2] = Subscription(41, "quotes")
        md.subs[3] = Subscription(41, "depth")
        return md

    reference = subscribed()
    for fields in (_fields(*m) for m in messages):
        (reference.depth(fields, 5) if fields[0] == b"12" else reference.tick_by_tick(fields))
    compiled, others = subscribed(), []

    def other(fields: list[bytes]) -> None:
        others.append(fields[0])
        compiled.depth(fields, 5) if fields[0] == b"12" else compiled.tick_by_tick(fields)

    first = compiled.decode(stream[:-7], other)  # the last frame is incomplete: it waits for the next read
    assert first.consumed == len(stream) - len(api.encode(*messages[-1])) and not first.oversized
    rest = compiled.decode(stream[first.consumed:], other)
    assert rest.consumed == len(stream) - first.consumed
    ours, theirs = compiled.take(7), reference.take(7)
    assert ours.tobytes() == theirs.tobytes()
    assert ours["kind"].tolist() == [Kind.TRADE, Kind.BOOK, Kind.QUOTE, Kind.TRADE, Kind.TRADE, Kind.TRADE, Kind.BOOK,
                                     Kind.BOOK]
    assert ours["price"][3] == -1 and ours["price"][4] == 1000 * 10**9 and ours["price"][5] == 1234567_123456789
    assert others == [b"12", b"99", b"99", b"99", b"12"]  # depth, the two fallbacks, MidPoint, depth
    assert compiled.unknown_request == reference.unknown_request == 1


def test_the_compiled_scan_hands_a_malformed_tick_to_python_and_stops_at_an_oversized_frame():
    md = MarketData()
    md.subs[1] = Subscription(41, "trades")
    bad = api.encode(99, 1, 2, "soon", "1", "1", 0, "", "")
    seen: list[list[bytes]] = []
    scanned = md.decode(bad + (api.MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 8, seen.append)
    assert scanned.oversized and scanned.consumed == len(bad) and scanned.others == 1
    assert seen == [[b"99", b"1", b"2", b"soon", b"1", b"1", b"0", b"", b""]]
    with pytest.raises(ValueError):
        md.tick_by_tick(seen[0])
