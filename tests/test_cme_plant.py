"""The `cme` feed through the whole plant: `streamctl venue cme` replays a synthetic capture
onto loopback multicast (A and B, definitions, snapshot loop), `streamctl up` runs the plant, and
the test subscribes with the streamctl client. Trades, 60 s bars and the final books are compared
with references computed from what the generator sent, not from our decoder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _calcref import ref_time_bars
from _cme import channel_feeds
from _common import free_port, wait_until

from streamctl.client import Subscriber
from streamctl.ingest.vendors.cme.pcap import write_pcap
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.ingest.vendors.cme.synthetic import INSTRUMENTS, generate
from streamctl.shm.records import Side

pytestmark = pytest.mark.timeout(240)

PACKETS = 3000
_BAR_FIELDS = ("ts_start", "ts_end", "open", "high", "low", "close", "volume", "trades", "vwap")


def _config(name: str, feeds: dict, pub_port: int, book: str) -> str:
    def g(key: str) -> str:
        return f"{{group: {feeds[key][0]}, port: {feeds[key][1]}}}"

    return f"""\
name: {name}
feeds:
  - name: cme
    vendor: cme
    symbols: [ESZ6, NQZ6]
    options:
      incremental_a: {g("incremental_a")}
      incremental_b: {g("incremental_b")}
      definition: {g("definition_a")}
      recovery_a: {g("recovery_a")}
      recovery_b: {g("recovery_b")}
      book: {book}
partitions: {{count: 1}}
calculators:
  bars: {{time: [60s]}}
  book: {{depth: 5}}
publish:
  endpoint: tcp://127.0.0.1:{pub_port}
  raw_trades: true
"""


def _venue(plant, capture, feeds, *drops: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamctl.cli", "venue", "cme", "--pcap", str(capture), "--speed", "100", "--hold",
         "--recovery", f"{feeds['recovery_a'][0]}:{feeds['recovery_a'][1]}",
         "--recovery", f"{feeds['recovery_b'][0]}:{feeds['recovery_b'][1]}", *drops],
        env=plant.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line
    return proc


def _reference_bars(syn) -> dict[str, list[dict]]:
    names = list(INSTRUMENTS)
    df = pd.DataFrame({"row": range(len(syn.trades)), "sym": [names.index(t.symbol) for t in syn.trades],
                       "ts": [t.ts_event for t in syn.trades], "recv": 0,
                       "price": np.array([t.price for t in syn.trades], np.int64),
                       "size": np.array([t.size for t in syn.trades], np.float64)})
    bars, late = ref_time_bars(df, 60, names)
    assert late == 0
    return bars


def _order_levels(orders: dict, side: int) -> list[tuple[float, float]]:
    """The top 5 levels of one side summed from the generator's resting orders (plain dicts)."""
    totals: dict[int, int] = {}
    for s, price, qty in orders.values():
        if s == side:
            totals[price] = totals.get(price, 0) + qty
    return [(p / 1e9, float(q)) for p, q in sorted(totals.items(), reverse=side == Side.BID)[:5]]


@pytest.mark.parametrize("drops,book", [((), "mbp"), (("--drop-a", "40"), "mbp"), (("--drop-both", "6"), "mbp"),
                                        (("--drop-both", "6"), "mbo")],
                         ids=["clean", "drop-a", "drop-both", "mbo-drop-both"])
def test_trades_bars_and_books_through_the_plant(plant, drops, book):
    schema = load_schema()
    feeds = channel_feeds()
    syn = generate(schema, packets=PACKETS, feeds=feeds)
    capture = plant.tmp / "channel.pcap"
    write_pcap(capture, syn.datagrams)
    name = f"cme{os.getpid() % 100000}"
    pub_port = free_port()
    venue = _venue(plant, capture, feeds, *drops)
    sub = Subscriber(f"tcp://127.0.0.1:{pub_port}")
    trades, bars, books, events, status = [], [], {}, [], []
    sub.on_trade(trades.append)
    sub.on_bar(bars.append)
    sub.on_book_update(lambda b: books.__setitem__(b.symbol, b))
    sub.on_event(events.append)
    sub.on_status(status.append)
    sub.subscribe("trade.", "bar.60s.", "book.", "event.cme", "status.")

    def pump_until(condition, timeout: float, what: str) -> None:
        wait_until(lambda: sub.poll(0.1) >= 0 and condition(), timeout, what, interval=0)

    try:
        plant.run("up", str(plant.write_config(name, _config(name, feeds, pub_port, book))), "--detach", check=True)
        wait_until(lambda: plant.process(name, "cme")["state"] == "ready", 60, "the feed to join its groups")
        pump_until(lambda: status, 30, "a status message (our subscriptions are in place)")
        venue.send_signal(signal.SIGUSR1)
        lost_ts = set()
        if drops and drops[0] == "--drop-both":
            pump_until(lambda: any("recovered" in e.message for e in events), 60, "recovery from the snapshot loop")
        expected = [(t.symbol, t.ts_event, t.price / 1e9, float(t.size), "B" if t.aggressor == 1 else "S")
                    for t in syn.trades]
        if drops and drops[0] == "--drop-both":
            # the trades of packets lost on both feeds are gone; which packets: the venue's rule
            seqs = sorted({int.from_bytes(d.payload[:4], "little") for d in syn.datagrams
                           if (d.group, d.port) == feeds["incremental_a"]})
            start = 2 * len(seqs) // 3
            dropped = set(seqs[start:start + 6])
            lost_ts = {d.ts_ns for d in syn.datagrams if int.from_bytes(d.payload[:4], "little") in dropped}
            expected = [t for t in expected if t[1] not in lost_ts]
        pump_until(lambda: len(trades) >= len(expected), 90, f"{len(expected)} trades")
        got = [(t.symbol, t.ts_event, t.price, t.size, t.side) for t in trades]
        for symbol in INSTRUMENTS:  # in order per topic (topics interleave as the worker batches them)
            assert [t for t in got if t[0] == symbol] == [t for t in expected if t[0] == symbol]
        assert len(got) == len(expected)

        feed = plant.process(name, "cme")
        assert feed["drops"]["malformed"] == 0
        if not drops:  # every B copy, in `streamctl status`
            wait_until(lambda: plant.process(name, "cme")["duplicates"] == PACKETS, 30, "every B copy counted")
        if drops and drops[0] == "--drop-both":
            assert any(e.kind == "gap" and "lost on both feeds" in e.message for e in events)
            assert feed["drops"]["gaps"] == 6
        else:
            assert feed["drops"]["gaps"] == 0 and not any(e.kind == "gap" for e in events)

        # every 60 s bar but each symbol's last (still open: the feed's clock has not passed it)
        ref = _reference_bars(syn)
        if not lost_ts:
            for topic, want in ref.items():
                have = [b for b in bars if f"bar.60s.{b.symbol}" == topic]
                assert len(have) >= len(want) - 1
                assert [{k: getattr(b, k) for k in _BAR_FIELDS} for b in have[:len(want) - 1]] == \
                       [{k: w[k] for k in _BAR_FIELDS} for w in want[:len(want) - 1]]

        # the last published book of each symbol equals the generator's final book (top 5): its
        # MBP levels, or with `book: mbo` the levels of its resting orders
        def final_book_matches() -> bool:
            for symbol in INSTRUMENTS:
                have = books.get(symbol)
                if have is None:
                    return False
                if book == "mbo":
                    bids = _order_levels(syn.orders[symbol], Side.BID)
                    asks = _order_levels(syn.orders[symbol], Side.ASK)
                else:
                    want = syn.books[symbol]
                    bids = [(p / 1e9, float(s)) for p, s in want[(Side.BID, False)][:5]]
                    asks = [(p / 1e9, float(s)) for p, s in want[(Side.ASK, False)][:5]]
                if [tuple(x) for x in have.bids] != bids or [tuple(x) for x in have.asks] != asks:
                    return False
            return True

        pump_until(final_book_matches, 30, "the final books")
    finally:
        sub.close()
        venue.kill()
        venue.wait(10)
