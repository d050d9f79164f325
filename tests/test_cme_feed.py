"""The CME session against the local venue over real multicast on loopback: definitions map
symbols, A/B arbitration hides losses on one feed, losses on both trigger recovery from the
snapshot loop, and every answer is compared with what the synthetic generator sent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from _cme import CmeCtx, channel_feeds, options_for
from _common import wait_until

from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.pcap import Datagram
from streamctl.ingest.vendors.cme.schema import load_schema
from streamctl.ingest.vendors.cme.session import Session
from streamctl.ingest.vendors.cme.synthetic import INSTRUMENTS, generate
from streamctl.ingest.vendors.cme.venue import CmeVenue
from streamctl.shm.records import Flag, Kind

SCHEMA = load_schema()
PACKETS = 600


def _run(*, drop_a: int = 0, drop_both: int = 0, corrupt_a: int = 0, hold: bool = True, speed: float = 200.0,
         book: str = "mbp", heartbeat_at: int = 0, rewind_at: int = 0, **options):
    feeds = channel_feeds()
    syn = generate(SCHEMA, packets=PACKETS, feeds=feeds)
    datagrams = syn.datagrams
    if rewind_at:  # packet `rewind_at`'s first message says TransactTime 1 ns after the epoch (A and B)
        datagrams = [d if int.from_bytes(d.payload[:4], "little") != rewind_at or (d.group, d.port) not in
                     {feeds["incremental_a"], feeds["incremental_b"]}
                     else Datagram(d.ts_ns, d.group, d.port, d.payload[:22] + (1).to_bytes(8, "little") + d.payload[30:])
                     for d in datagrams]
    if heartbeat_at:  # a packet holding only a heartbeat inserted as MsgSeqNum `heartbeat_at`
        datagrams = _insert_heartbeat(datagrams, heartbeat_at, feeds)
        syn.last_seq += 1
    if corrupt_a:  # the A copy of packet `corrupt_a` truncated mid-message
        datagrams = [d if not (d.group == feeds["incremental_a"][0] and d.port == feeds["incremental_a"][1]
                               and int.from_bytes(d.payload[:4], "little") == corrupt_a)
                     else type(d)(d.ts_ns, d.group, d.port, d.payload[:-5]) for d in datagrams]
    venue = CmeVenue(datagrams, SCHEMA, speed=speed, drop_a=drop_a, drop_both=drop_both, hold=hold,
                     recovery=(feeds["recovery_a"], feeds["recovery_b"]), snapshot_interval=0.1)
    ctx = CmeCtx()
    session = Session(options_for(feeds, definition_timeout_s=20.0, book=book, **options),
                      SimpleNamespace(symbols=list(INSTRUMENTS)), ctx)
    venue.start()
    batches = []
    try:
        session.open()
        venue.release()

        def step() -> None:
            batch = session.poll(0.05)
            if batch is not None:
                batches.append(batch)

        wait_until(lambda: venue.finished.is_set() and session.expected == syn.last_seq + 1
                   and not session.recovering, 60, "the whole channel applied", step)
        for _ in range(3):
            step()
    finally:
        session.close()
        venue.stop()
    out = np.concatenate(batches) if batches else np.zeros(0)
    return syn, session, ctx, out, venue


def _insert_heartbeat(datagrams: list[Datagram], seq: int, feeds: dict) -> list[Datagram]:
    """The capture with a heartbeat-only packet as MsgSeqNum `seq` on A and B (later packets renumbered)."""
    out: list[Datagram] = []
    incremental = {feeds["incremental_a"], feeds["incremental_b"]}
    for d in datagrams:
        n = int.from_bytes(d.payload[:4], "little")
        if (d.group, d.port) in incremental and n >= seq:
            if n == seq:
                out.append(Datagram(d.ts_ns, d.group, d.port, encode_packet(seq, d.ts_ns, [encode_message(SCHEMA, 12, {})])))
            d = Datagram(d.ts_ns, d.group, d.port, (n + 1).to_bytes(4, "little") + d.payload[4:])
        out.append(d)
    return out


def _sids_in(payload: bytes) -> set[int]:
    """SecurityIDs of the MD entries (those that carry RptSeq) of one packet."""
    dec = Decoder(SCHEMA).decode([payload])
    return {sid for tid in (37, 46, 48) if tid in dec.msg_tid.tolist()
            for sid in dec.group(tid, "NoMDEntries")[1]["SecurityID"].tolist()}


def _resets(ctx, out) -> dict[str, tuple[int, int]]:
    """Per symbol: (RESETs flagging the book empty, RESETs opening a snapshot)."""
    names = {v: k for k, v in ctx.ids.items()}
    resets = out[out["kind"] == Kind.RESET]
    return {name: (int(((resets["instrument_id"] == iid) & ~(resets["flags"] & Flag.SNAPSHOT).astype(bool)).sum()),
                   int(((resets["instrument_id"] == iid) & (resets["flags"] & Flag.SNAPSHOT).astype(bool)).sum()))
            for iid, name in names.items()}


def _trades(ctx, out) -> list[tuple]:
    names = {v: k for k, v in ctx.ids.items()}
    t = out[out["kind"] == Kind.TRADE]
    return [(names[int(r["instrument_id"])], int(r["ts_event"]), int(r["price"]), int(r["size"]), int(r["side"]))
            for r in t]


def _expected_trades(syn) -> list[tuple]:
    return [(t.symbol, t.ts_event, t.price, t.size, t.aggressor) for t in syn.trades]


def _published_books(ctx, out) -> dict:
    """Each symbol's book as the records say (RESET clears, BOOK sets a price's size, 0 removes)."""
    names = {v: k for k, v in ctx.ids.items()}
    books: dict = {}
    for r in out[(out["kind"] == Kind.BOOK) | (out["kind"] == Kind.RESET)]:
        book = books.setdefault(names[int(r["instrument_id"])], {1: {}, 2: {}})
        if r["kind"] == Kind.RESET:
            book[1].clear()
            book[2].clear()
        elif r["size"] == 0:
            book[int(r["side"])].pop(int(r["price"]), None)
        else:
            book[int(r["side"])][int(r["price"])] = float(r["size"])
    return books


def _generated_books(syn) -> dict:
    return {symbol: {side: {p: float(s) for p, s in book[(side, False)]} for side in (1, 2)}
            for symbol, book in syn.books.items()}


def _generated_order_books(syn) -> dict:
    """Each symbol's levels summed from the generator's resting orders (plain dicts, no code of ours)."""
    books: dict = {}
    for symbol, orders in syn.orders.items():
        book = books.setdefault(symbol, {1: {}, 2: {}})
        for side, price, qty in orders.values():
            book[int(side)][price] = book[int(side)].get(price, 0.0) + qty
    return books


def _final_books(session) -> dict:
    return {sid: session.channel.levels(sid) for sid in session.channel.book_sids()}


@pytest.fixture(scope="module")
def clean_run():
    return _run()


def test_definitions_map_symbols_and_every_trade_arrives(clean_run):
    syn, session, ctx, out, _ = clean_run
    assert ctx.kinds()[0] == "connected" and "ESZ6=1001" in ctx.events[0][1]
    assert _trades(ctx, out) == _expected_trades(syn)
    assert session.duplicates == ctx.counts["duplicates"] == PACKETS  # every B copy, counted for `status`
    assert ctx.counts["gaps"] == 0 and ctx.counts["malformed"] == 0 and session.recoveries == 0
    for symbol, (sid, _, _) in INSTRUMENTS.items():
        assert session.channel.levels(sid) == syn.books[symbol]
    assert _published_books(ctx, out) == _generated_books(syn) and session.channel.rejected == 0


def test_records_are_published_at_end_of_event_only(clean_run):
    _, _, _, out, _ = clean_run
    # every record batch ends an event: the last record of each instrument carries LAST
    last = out[-1]
    assert last["flags"] & Flag.LAST
    books = out[out["kind"] == Kind.BOOK]
    assert len(books) > PACKETS and (books["price"] > 0).all()


def test_losses_on_feed_a_only_are_invisible(clean_run):
    _, _, ctx0, out0, _ = clean_run
    syn, session, ctx, out, venue = _run(drop_a=25)
    assert len(venue.dropped_a) == 25
    assert ctx.counts["gaps"] == 0 and session.recoveries == 0
    strip = ["ts_event", "price", "size", "sequence", "instrument_id", "kind", "side", "flags"]
    assert len(out) == len(out0)
    assert [tuple(r) for r in out[strip]] == [tuple(r) for r in out0[strip]]


def test_a_corrupt_copy_is_counted_and_the_other_feed_fills_in():
    syn, session, ctx, out, _ = _run(corrupt_a=100)
    assert ctx.counts["malformed"] == 1 and ctx.counts["gaps"] == 0
    assert _trades(ctx, out) == _expected_trades(syn)


def test_losses_on_both_feeds_recover_from_the_snapshot_loop(clean_run):
    syn0, session0, _, _, _ = clean_run
    syn, session, ctx, out, venue = _run(drop_both=5)
    assert ctx.counts["gaps"] == 5 and session.recoveries >= 1
    assert "gap" in ctx.kinds() and any("recovered" in m for _, m, _ in ctx.events)
    # the books flagged empty (RESET) at the gap, then rebuilt from snapshots, equal the no-drop run
    assert _final_books(session) == _final_books(session0)
    for symbol, (sid, _, _) in INSTRUMENTS.items():
        assert session.channel.levels(sid) == syn.books[symbol]
    assert _published_books(ctx, out) == _generated_books(syn)
    assert session.channel.rejected == 0  # every queued entry fitted the rebuilt book: none applied twice
    assert (out["kind"] == Kind.RESET).sum() >= 2
    assert (out["flags"] & Flag.SNAPSHOT).any()
    # exactly the trades of the lost packets are gone (the snapshot loop carries books, not
    # trades); the trades of packets queued during recovery all arrive, in order
    lost_ts = {d.ts_ns for d, seq in venue.incrementals if seq in venue.dropped_both}
    assert lost_ts & {t[1] for t in _expected_trades(syn)}  # the drop did hit a trade
    assert _trades(ctx, out) == [t for t in _expected_trades(syn) if t[1] not in lost_ts]


def test_a_late_joiner_starts_from_the_snapshot_loop():
    # the replay (about 5 s) starts with the venue; the session joins once it has the definitions
    syn, session, ctx, out, _ = _run(hold=False, speed=10.0)
    assert session.recoveries == 1 and any("after its start" in m for _, m, _ in ctx.events)
    assert session.channel.rejected == 0 and _published_books(ctx, out) == _generated_books(syn)
    for symbol, (sid, _, _) in INSTRUMENTS.items():
        assert session.channel.levels(sid) == syn.books[symbol]


@pytest.mark.parametrize("drop_both", [0, 5], ids=["clean", "drop-both"])
def test_mbo_books_equal_the_generators_orders(drop_both):
    syn, session, ctx, out, _ = _run(drop_both=drop_both, book="mbo")
    assert ctx.counts["gaps"] == drop_both and session.channel.rejected == 0
    assert _published_books(ctx, out) == _generated_order_books(syn)
    assert _published_books(ctx, out) != _generated_books(syn)  # the MBP levels are not what was published
    if drop_both:  # rebuilt from the order snapshots (53), queued updates they held skipped, not applied twice
        assert session.recoveries >= 1 and (out["flags"] & Flag.SNAPSHOT).any()
    if not drop_both:
        assert _trades(ctx, out) == _expected_trades(syn)


def test_a_gap_recovers_only_the_books_whose_rptseq_jumped():
    # the gap is declared when 30 packets wait behind the lost one (whatever the time), so the
    # packets the rule reads are the same on every run
    syn, session, ctx, out, venue = _run(drop_both=1, gap_timeout_ms=60_000, max_pending=30)
    (lost_seq,) = venue.dropped_both
    payload = next(d.payload for d, seq in venue.incrementals if seq == lost_seq)
    names = {sid: name for name, (sid, _, _) in INSTRUMENTS.items()}
    (hit,) = {names[sid] for sid in _sids_in(payload)}  # one instrument per synthetic packet
    (spared,) = set(INSTRUMENTS) - {hit}
    assert ctx.counts["gaps"] == 1 and session.recoveries == 1
    assert any("1 book(s) flagged empty, 1 kept (RptSeq continued)" in m for _, m, _ in ctx.events)
    resets = _resets(ctx, out)
    assert resets[hit][0] == 1 and resets[hit][1] >= 1  # flagged empty, then rebuilt from its snapshot
    assert resets[spared] == (0, 0)  # never flagged, never rebuilt
    assert _published_books(ctx, out) == _generated_books(syn) and session.channel.rejected == 0
    for symbol, (sid, _, _) in INSTRUMENTS.items():
        assert session.channel.levels(sid) == syn.books[symbol]


@pytest.mark.parametrize("book", ["mbp", "mbo"])
def test_a_gap_that_lost_no_book_update(book):
    # the lost packet carries only a heartbeat: with MBP books every instrument's RptSeq goes on
    # and nothing recovers; order updates carry no RptSeq, so MBO books cannot prove it and recover
    at = 2 * (PACKETS + 1) // 3 + 1  # the packet the venue withholds (`--drop-both`, two thirds in)
    syn, session, ctx, out, venue = _run(drop_both=1, heartbeat_at=at, book=book)
    assert venue.dropped_both == {at} and ctx.counts["gaps"] == 1
    if book == "mbp":
        assert session.recoveries == 0 and not (out["kind"] == Kind.RESET).any()
        assert any("none lost an update; no recovery needed" in m for _, m, _ in ctx.events)
        assert _trades(ctx, out) == _expected_trades(syn)
        assert _published_books(ctx, out) == _generated_books(syn)
    else:
        assert session.recoveries == 1 and (out["flags"] & Flag.SNAPSHOT).any()
        assert _published_books(ctx, out) == _generated_order_books(syn)


def test_transact_time_going_back_is_reported_not_refused():
    syn, session, ctx, out, _ = _run(rewind_at=300)
    assert session.channel.ts_regressions == 1
    assert [m for k, m, _ in ctx.events if "TransactTime went back" in m] == [
        "TransactTime went back 1 time(s) on this channel so far (a message earlier than one before it in MsgSeqNum "
        "order); applied as sent"]
    assert ctx.counts["malformed"] == 0 and ctx.counts["gaps"] == 0
    assert _published_books(ctx, out) == _generated_books(syn)  # every packet applied
    assert 1 in out["ts_event"].tolist()
