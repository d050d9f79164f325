"""A Databento session resumes where the feed's rings stop: `start` = the last delivered
``ts_event``, and the records at that time already delivered dropped (issue 9, item 2)."""

from __future__ import annotations

import numpy as np
import pytest
from _data import sample
from _databento import ESU4_MBP1, ESU4_TRADES, Ctx, collect, open_session
from _shmutil import no_leaks, unique_plant

from streamctl.ingest.resume import AlreadyDelivered, ResumePoint, resume_point
from streamctl.shm.records import RECORD_DTYPE, Kind
from streamctl.shm.ring import Ring
from streamctl.shm.segments import segment_name

COMPARED = ["ts_event", "price", "price2", "size", "size2", "sequence", "kind", "side", "flags", "instrument_id"]


T, Q = int(Kind.TRADE), int(Kind.QUOTE)


def records(ts: list[int], ids: list[int], kinds: list[int] | None = None) -> np.ndarray:
    out = np.zeros(len(ts), RECORD_DTYPE)
    out["ts_event"], out["instrument_id"], out["kind"] = ts, ids, kinds or Kind.TRADE
    out["sequence"] = np.arange(len(ts))  # tells the records apart
    return out


def test_resume_point_from_the_rings_ignores_resets():
    stream = records([1, 2, 3, 3, 3, 3], [7, 7, 7, 8, 7, 8])
    with no_leaks(unique_plant("resume")) as plant:
        rings = [Ring.create(segment_name(plant, "ring", f"p{p}"), 8, plant=plant) for p in range(2)]
        try:
            assert resume_point(rings) is None
            rings[0].publish(stream[stream["instrument_id"] == 7])
            rings[1].publish(stream[stream["instrument_id"] == 8])
            reset = records([10**18], [7])
            reset["kind"] = Kind.RESET  # the feed's own, stamped with the wall clock
            rings[0].publish(reset)
            assert resume_point(rings) == ResumePoint(3, {(7, T): 2, (8, T): 2})
        finally:
            for ring in rings:
                ring.close()
                ring.unlink()


@pytest.mark.parametrize("cut", range(1, 9))
def test_already_delivered_drops_exactly_what_was_delivered_however_the_replay_is_cut(cut):
    # Delivered up to and including the first record of instrument 7 at ts 3; the replay from
    # ts 3 repeats it, then brings what was never delivered, in whatever batches the socket makes.
    replay = records([3, 3, 3, 4, 3, 5], [8, 7, 7, 7, 7, 8])
    point = ResumePoint(3, {(7, T): 1, (8, T): 1})
    drop = AlreadyDelivered(point)
    got = np.concatenate([drop.apply(replay[:cut]), drop.apply(replay[cut:])])
    assert got["sequence"].tolist() == [2, 3, 4, 5]  # ts 3 of 7 (second), then everything from the first later record
    assert drop.dropped == 2 and drop.done


@pytest.mark.parametrize("cut", range(1, 6))
def test_already_delivered_when_the_gateway_replays_one_schema_after_the_other(cut):
    # Delivered: a trade and a quote of 7 at ts 3. Replayed: the trades schema up to now, then
    # the quotes schema from ts 3 again (time goes back between the two).
    replay = records([3, 4, 3, 4, 5], [7, 7, 7, 7, 7], [T, T, Q, Q, T])
    drop = AlreadyDelivered(ResumePoint(3, {(7, T): 1, (7, Q): 1}))
    got = np.concatenate([drop.apply(replay[:cut]), drop.apply(replay[cut:])])
    assert got["sequence"].tolist() == [1, 3, 4]
    assert drop.dropped == 2 and drop.done  # both dropped, and a later record has come


@pytest.mark.parametrize("resume", [True, False])
def test_a_session_resumes_after_what_the_rings_hold(venues, resume):
    venue = venues.start([sample(ESU4_TRADES), sample(ESU4_MBP1)])
    full_session, full_ctx = open_session(venue.port, "ESU4", schemas=["trades", "mbp-1"])
    try:
        full = collect(full_session, lambda r: len(r) >= 120 + 2288)
    finally:
        full_session.close()
    ts = full["ts_event"]
    k = int(np.flatnonzero(ts[1:] == ts[:-1])[len(ts) // 400]) + 1  # cut between two records of one ts_event
    assert ts[k - 1] == ts[k]
    at = int(ts[k - 1])
    ctx = Ctx()
    ctx.ids = dict(full_ctx.ids)
    delivered = full[:k][ts[:k] == at]
    kinds, counts = np.unique(delivered["kind"], return_counts=True)
    ctx.resume_at = ResumePoint(at, {(full_ctx.ids["ESU4"], int(kind)): int(n) for kind, n in zip(kinds, counts, strict=True)})
    session, _ = open_session(venue.port, "ESU4", ctx=ctx, schemas=["trades", "mbp-1"], resume=resume)
    expected = full[k:] if resume else full
    try:
        got = collect(session, lambda r: len(r) >= len(expected))
        assert session.resumed is resume
    finally:
        session.close()
    for name in COMPARED:
        assert (got[name] == expected[name]).all(), name
    connected = next(message for kind, message, _ in ctx.events if kind == "connected")
    assert (f"replaying from ts_event {at}" in connected) is resume
    # DBN v1 (these files) has no SystemMsg code: the text tells the replay-completed message apart.
    replayed = [message for kind, message, _ in ctx.events if kind == "system" and "replay" in message]
    assert replayed == (["Finished trades replay", "Finished mbp-1 replay"] if resume else [])
