"""The local Alpaca venue is faithful: Alpaca's own client, alpaca-py, pointed at it (its
``url_override``) receives exactly the file's trades and quotes and the minute bars they make,
on the stocks and the crypto stream; and our session receives the same ticks, in both framings."""

from __future__ import annotations

import asyncio
import json

import msgpack
import numpy as np
import pytest
import websockets
from _alpaca import (
    ESU4_MBP1,
    KEY,
    SECRET,
    Ctx,
    OfficialStream,
    collect,
    file_records,
    open_session,
    same_ticks,
)
from _common import wait_until
from _data import sample

from streamctl.ingest.vendors.alpaca.venue import AlpacaVenue, parse_injection
from streamctl.shm.records import Kind

pytestmark = pytest.mark.timeout(180)
_MINUTE = 60_000_000_000


def _minute_bars(trades: np.ndarray, size_scale: float = 1.0) -> list[tuple]:
    """(start ns, open, high, low, close, volume, trades) per minute of `trades`, in order."""
    bars: dict[int, list] = {}
    for ts, price, size in zip(trades["ts_event"].tolist(), (trades["price"] / 1e9).tolist(),
                               (trades["size"] * size_scale).tolist(), strict=True):
        start = ts - ts % _MINUTE
        bar = bars.setdefault(start, [start, price, price, price, price, 0.0, 0])
        bar[2], bar[3], bar[4] = max(bar[2], price), min(bar[3], price), price
        bar[5] += size
        bar[6] += 1
    return [tuple(b) for b in bars.values()]


def _ns(dt) -> int:
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _check_official(official: OfficialStream, ticks: np.ndarray, size_scale: float = 1.0) -> None:
    trades = ticks[ticks["kind"] == Kind.TRADE]
    quotes = ticks[ticks["kind"] == Kind.QUOTE]
    # alpaca-py turns `t` into a datetime: microseconds, the nanoseconds cut off
    assert [(_ns(t.timestamp), t.price, t.size) for t in official.trades] == [
        (ts // 1000 * 1000, p / 1e9, s * size_scale) for ts, p, s in
        zip(trades["ts_event"].tolist(), trades["price"].tolist(), trades["size"].tolist(), strict=True)]
    assert [(_ns(q.timestamp), q.bid_price, q.bid_size, q.ask_price, q.ask_size) for q in official.quotes] == [
        (ts // 1000 * 1000, b / 1e9, bs * size_scale, a / 1e9, asz * size_scale) for ts, b, bs, a, asz in
        zip(quotes["ts_event"].tolist(), quotes["price"].tolist(), quotes["size"].tolist(),
            quotes["price2"].tolist(), quotes["size2"].tolist(), strict=True)]
    got = [(_ns(b.timestamp), b.open, b.high, b.low, b.close, b.volume, b.trade_count) for b in official.bars]
    assert got == _minute_bars(trades, size_scale)


def test_alpaca_py_stock_stream_gets_the_files_trades_quotes_and_bars():
    from alpaca.data.live import StockDataStream

    ticks = file_records(ESU4_MBP1)
    n_trades = int(np.count_nonzero(ticks["kind"] == Kind.TRADE))
    n_quotes = len(ticks) - n_trades
    n_bars = len(_minute_bars(ticks[ticks["kind"] == Kind.TRADE]))
    assert n_trades > 100 and n_quotes > 1000 and n_bars >= 4
    with AlpacaVenue([str(sample(ESU4_MBP1))], key=KEY, secret=SECRET) as venue:
        stream = StockDataStream(KEY, SECRET, url_override=f"ws://127.0.0.1:{venue.port}/v2/iex")
        with OfficialStream(stream).subscribe("ESU4") as official:
            wait_until(lambda: (len(official.trades), len(official.quotes), len(official.bars)) == (
                n_trades, n_quotes, n_bars), 60, "alpaca-py to receive the whole file")
        path, headers = venue.requests[0]
        assert path == "/v2/iex" and headers["Content-Type"] == "application/msgpack"
    _check_official(official, ticks)

    for encoding in ("msgpack", "json"):  # our session, on a fresh venue: the same ticks, nanoseconds kept
        with AlpacaVenue([str(sample(ESU4_MBP1))], key=KEY, secret=SECRET) as venue:
            session, ctx = open_session(venue.port, "ESU4", encoding=encoding)
            ours = collect(session, lambda r: len(r) >= len(ticks))
            session.close()
        same_ticks(ours, ticks)
        assert not ctx.counts, ctx.counts


def _crypto_csv(tmp_path) -> tuple[str, np.ndarray]:
    """The file's ticks as a crypto CSV: symbol BTCUSD, sizes in eighths (fractional)."""
    ticks = file_records(ESU4_MBP1)
    lines = ["ts_event,symbol,kind,price,size,side,bid,ask,bid_size,ask_size"]
    for rec in ticks.tolist():
        ts, _recv, price, price2, size, size2, _seq, _iid, kind, side, _f, _r = rec
        if kind == Kind.TRADE:
            lines.append(f"{ts},BTCUSD,trade,{price / 1e9!r},{size / 8!r},{'B' if side == 1 else 'S'},,,,")
        else:
            lines.append(f"{ts},BTCUSD,quote,,,,{price / 1e9!r},{price2 / 1e9!r},{size / 8!r},{size2 / 8!r}")
    path = tmp_path / "btcusd.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path), ticks


def test_alpaca_py_crypto_stream_gets_fractional_trades_and_quotes(tmp_path):
    from alpaca.data.live import CryptoDataStream

    path, ticks = _crypto_csv(tmp_path)
    n_trades = int(np.count_nonzero(ticks["kind"] == Kind.TRADE))
    n_bars = len(_minute_bars(ticks[ticks["kind"] == Kind.TRADE]))
    with AlpacaVenue([path], key=KEY, secret=SECRET) as venue:
        stream = CryptoDataStream(KEY, SECRET, url_override=f"ws://127.0.0.1:{venue.port}/v1beta3/crypto/us")
        with OfficialStream(stream).subscribe("BTCUSD") as official:
            wait_until(lambda: (len(official.trades), len(official.quotes), len(official.bars)) == (
                n_trades, len(ticks) - n_trades, n_bars), 60, "alpaca-py to receive the whole file")
    _check_official(official, ticks, size_scale=1 / 8)

    with AlpacaVenue([path], key=KEY, secret=SECRET) as venue:
        session, ctx = open_session(venue.port, "BTCUSD", feed="crypto")
        ours = collect(session, lambda r: len(r) >= len(ticks))
        session.close()
    assert venue.requests[0][0] == "/v1beta3/crypto/us"
    expected = ticks.copy()
    expected["size"] /= 8
    expected["size2"] /= 8
    same_ticks(ours, expected)
    trades = ours["kind"] == Kind.TRADE
    assert np.array_equal(ours["side"][trades], np.where(ticks["side"][trades] == 1, 1, 2))  # taker side kept


def test_json_client_subscribes_unsubscribes_and_is_answered_with_the_full_set():
    """A plain `websockets` client without the msgpack header gets JSON text frames; an
    unsubscribe is answered with the whole remaining set, and only what is left flows."""

    async def scenario(port: int) -> tuple[list, list, list]:
        frames: list = []
        async with websockets.connect(f"ws://127.0.0.1:{port}/v2/sip") as ws:
            frames.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
            frames.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "subscribe", "trades": ["ESU4"], "quotes": ["ESU4"], "bars": ["*"]}))
            frames.append(json.loads(await ws.recv()))
            before: list = []
            while sum(m["T"] == "q" for m in before) < 100:
                before += json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "unsubscribe", "quotes": ["ESU4"]}))
            while True:
                raw = await ws.recv()
                assert isinstance(raw, str)  # JSON comes in text frames
                frame = json.loads(raw)
                if frame[0]["T"] == "subscription":
                    frames.append(frame)
                    break
            after: list = []
            while sum(m["T"] == "t" for m in after) < 300:  # the looping venue goes on
                after += json.loads(await ws.recv())
        return frames, before, after

    with AlpacaVenue([str(sample(ESU4_MBP1))], key=KEY, secret=SECRET, loop=True,
                     injections=[parse_injection("unknown@0")]) as venue:
        frames, before, after = asyncio.run(scenario(venue.port))
    assert frames[0] == [{"T": "success", "msg": "connected"}]
    assert frames[1] == [{"T": "success", "msg": "authenticated"}]
    assert frames[2][0]["trades"] == ["ESU4"] and frames[2][0]["quotes"] == ["ESU4"] and frames[2][0]["bars"] == ["*"]
    assert frames[3][0]["trades"] == ["ESU4"] and frames[3][0]["quotes"] == [] and frames[3][0]["bars"] == ["*"]
    assert before[0]["T"] == "zz"  # the injected unknown type
    assert {"t", "q"} <= {m["T"] for m in before[1:]}
    assert {m["T"] for m in after} == {"t", "b"}  # once unsubscribed, quotes stop
    assert all(m["t"].endswith("Z") and len(m["t"]) == 30 for m in after)  # RFC-3339, nanoseconds


def test_bad_keys_and_auth_errors_follow_alpacas_handshake():
    async def attempt(port: int, key: str, secret: str) -> tuple[list, int | None]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v2/iex",
                                      additional_headers={"Content-Type": "application/msgpack"}) as ws:
            hello = msgpack.unpackb(await ws.recv())
            await ws.send(msgpack.packb({"action": "auth", "key": key, "secret": secret}))
            answer = msgpack.unpackb(await ws.recv())
            await ws.wait_closed()
            return [hello, answer], ws.close_code

    with AlpacaVenue([str(sample(ESU4_MBP1))], key=KEY, secret=SECRET) as venue:
        frames, code = asyncio.run(attempt(venue.port, KEY, "wrong"))
    assert frames[1] == [{"T": "error", "code": 402, "msg": "auth failed"}] and code == 1008
    with AlpacaVenue([str(sample(ESU4_MBP1))], auth_error=409) as venue:
        frames, _ = asyncio.run(attempt(venue.port, KEY, SECRET))
    assert frames[1] == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]


@pytest.mark.parametrize("text, message", [
    ("boom@3", "WHAT one of"), ("error@3", "needs `:ARG`"), ("error:999@3", "documented code"),
    ("cancel:5@5", "M < N"), ("disconnect:1@3", "takes no"),
])
def test_bad_injections_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message):
        parse_injection(text)


def test_ctx_ids_start_at_one():  # the venue tests rely on 0 being NO_INSTRUMENT
    assert Ctx().instrument_id("X") == 1
