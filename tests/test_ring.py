"""The SPSC ring: policies, wrap-around, restarts, and a cross-process property test."""

from __future__ import annotations

import multiprocessing as mp
import random
import time

import numpy as np
import pytest
from _common import wait_until
from _shmutil import no_leaks, unique_plant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.shm.idle import IdleStrategy
from streamctl.shm.records import RECORD_DTYPE, RECORD_SIZE
from streamctl.shm.ring import Ring, RingError, ring_bytes
from streamctl.shm.segments import SegmentError, segment_name
from streamctl.shm.stats import ProcessTable

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_SEQ_WORD = RECORD_DTYPE.fields["sequence"][1] // 8


def pattern(seqs: np.ndarray) -> np.ndarray:
    """Records whose 64 bytes all derive from their sequence number (word 6 is the number)."""
    seqs = np.asarray(seqs, dtype=np.uint64)
    words = (seqs[:, None] * _K1) ^ (np.arange(8, dtype=np.uint64)[None, :] * _K2 + seqs[:, None])
    words[:, _SEQ_WORD] = seqs
    return words.view(RECORD_DTYPE).reshape(len(seqs))


def check_pattern(records: np.ndarray) -> np.ndarray:
    """The sequence numbers of `records`; raises if any record is torn (any byte off)."""
    seqs = records.view(np.uint64).reshape(-1, 8)[:, _SEQ_WORD].copy()
    expected = pattern(seqs)
    bad = np.flatnonzero((records.view(np.uint64).reshape(-1, 8) != expected.view(np.uint64).reshape(-1, 8)).any(1))
    if len(bad):
        raise AssertionError(f"torn records at positions {bad[:5].tolist()} (seqs {seqs[bad[:5]].tolist()})")
    return seqs


@pytest.fixture
def plant():
    with no_leaks(unique_plant("ring")) as name:
        yield name


@pytest.fixture
def make_ring(plant):
    made: list[Ring] = []

    def make(capacity: int = 8, overflow: str = "drop", purpose: str = "r0") -> Ring:
        ring = Ring.create(segment_name(plant, "ring", purpose), capacity, overflow=overflow, plant=plant)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.close()
        ring.unlink()


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("capacity", [0, 1, 3, 100, 2.0])
def test_capacity_must_be_a_power_of_two(plant, capacity):
    with pytest.raises(RingError, match=r"`capacity` must be a power of two"):
        Ring.create(segment_name(plant, "ring", "x"), capacity, plant=plant)


def test_overflow_policy_is_checked(plant):
    with pytest.raises(RingError, match=r"`overflow` must be `drop` or `block`, was `'wait'`"):
        Ring.create(segment_name(plant, "ring", "x"), 8, overflow="wait", plant=plant)  # type: ignore[arg-type]


def test_segment_size_and_counters_start_at_zero(make_ring):
    ring = make_ring(capacity=16)
    assert ring.capacity == 16 and ring.overflow == "drop"
    assert (ring.produced, ring.consumed, ring.dropped, ring.fill) == (0, 0, 0, 0)
    assert ring._seg.size == ring_bytes(16) == 256 + 16 * RECORD_SIZE
    assert ring.creator_pid > 0


def test_wrap_around_delivers_in_order(make_ring):
    ring = make_ring(capacity=8)
    seq = 0
    got = []
    for n in [3, 5, 7, 1, 8, 6, 2]:
        assert ring.publish(pattern(np.arange(seq, seq + n))) == n
        seq += n
        got.append(check_pattern(ring.consume(5)))
        got.append(check_pattern(ring.consume(100)))
    assert np.concatenate(got).tolist() == list(range(seq))
    assert ring.produced == ring.consumed == seq and ring.dropped == 0


def test_drop_policy_counts_what_does_not_fit(make_ring):
    ring = make_ring(capacity=8)
    assert ring.publish(pattern(np.arange(5))) == 5
    assert ring.publish(pattern(np.arange(5, 10))) == 3  # 5, 6, 7 fit; 8, 9 dropped
    assert ring.dropped == 2 and ring.fill == 8
    assert ring.publish(pattern(np.arange(10, 30))) == 0
    assert ring.dropped == 22
    assert check_pattern(ring.consume(100)).tolist() == list(range(8))
    assert ring.publish(pattern(np.arange(30, 50))) == 8  # a batch larger than the ring
    assert ring.dropped == 34
    assert check_pattern(ring.consume(100)).tolist() == list(range(30, 38))


def test_block_policy_gives_up_after_timeout_and_counts(make_ring):
    ring = make_ring(capacity=8, overflow="block")
    assert ring.publish(pattern(np.arange(6))) == 6
    start = time.monotonic()
    assert ring.publish(pattern(np.arange(6, 10)), timeout=0.05) == 2
    assert 0.04 <= time.monotonic() - start < 5
    assert ring.dropped == 2 and ring.blocked == 1


def test_block_policy_stops_when_asked(make_ring):
    ring = make_ring(capacity=8, overflow="block")
    ring.publish(pattern(np.arange(8)))
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    assert ring.publish(pattern(np.arange(8, 12)), should_stop=should_stop, timeout=30) == 0
    assert ring.dropped == 4 and len(calls) == 4


def test_consume_into_out_buffer_and_empty(make_ring):
    ring = make_ring(capacity=16)
    out = np.zeros(4, dtype=RECORD_DTYPE)
    assert len(ring.consume(10, out)) == 0
    ring.publish(pattern(np.arange(6)))
    first = ring.consume(10, out)
    assert np.shares_memory(first, out) and check_pattern(first).tolist() == [0, 1, 2, 3]
    assert check_pattern(ring.consume(10, out)).tolist() == [4, 5]
    ring.publish(pattern(np.arange(1)))
    with pytest.raises(RingError, match="`out` must be a writeable C-contiguous RECORD_DTYPE"):
        ring.consume(10, np.zeros(4, dtype=np.uint64))


def test_publish_refuses_another_dtype_and_accepts_strided(make_ring):
    ring = make_ring(capacity=16)
    with pytest.raises(RingError, match=r"`records` must have RECORD_DTYPE, was `uint64`"):
        ring.publish(np.zeros(8, dtype=np.uint64))
    assert ring.publish(pattern(np.arange(10))[::2]) == 5
    assert check_pattern(ring.consume(10)).tolist() == [0, 2, 4, 6, 8]


def test_restarted_producer_and_consumer_carry_on(make_ring):
    ring = make_ring(capacity=8)
    producer = Ring.attach(ring.name)
    consumer = Ring.attach(ring.name)
    producer.publish(pattern(np.arange(6)))
    assert check_pattern(consumer.consume(4)).tolist() == [0, 1, 2, 3]
    producer.close()
    consumer.close()
    producer, consumer = Ring.attach(ring.name), Ring.attach(ring.name)  # "restarted"
    producer.publish(pattern(np.arange(6, 12)))
    assert check_pattern(consumer.consume(100)).tolist() == list(range(4, 12))
    producer.close()
    consumer.close()


def test_attach_refuses_another_kind(plant):
    table = ProcessTable.create(segment_name(plant, "stats"), 2, plant=plant)
    try:
        with pytest.raises(SegmentError, match=r"is a STATS segment, expected RING"):
            Ring.attach(table.name)
    finally:
        table.close()
        table.unlink()


def test_close_is_idempotent_and_unlink_keeps_mapping(make_ring):
    ring = make_ring(capacity=8)
    other = Ring.attach(ring.name)
    ring.unlink()
    other.publish(pattern(np.arange(3)))  # the mapping outlives the name
    assert check_pattern(other.consume(10)).tolist() == [0, 1, 2]
    other.close()
    other.close()
    with pytest.raises(SegmentError, match="does not exist"):
        Ring.attach(ring.name)


def test_idle_strategy_backs_off_and_resets():
    idle = IdleStrategy(spins=2, yields=2, min_sleep=1e-5, max_sleep=4e-5)
    for _ in range(4):
        idle.idle(False)
    assert idle.current_sleep == 1e-5
    for _ in range(5):
        idle.idle(False)
    assert idle.current_sleep == 4e-5  # doubled, capped
    idle.idle(True)
    assert idle.current_sleep == 1e-5
    with pytest.raises(ValueError, match="`min_sleep`"):
        IdleStrategy(min_sleep=0)


# --------------------------------------------------------------------------- two processes


def _consumer_main(conn) -> None:
    """Consumer process reused across examples: attach, consume at a given pace, report."""
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, max_records, pause_every, pause, seed = msg
        rng = random.Random(seed)
        ring = Ring.attach(name)
        conn.send("attached")
        seqs = []
        finished = False
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not finished and conn.poll():
                    finished = conn.recv() == "finished"
                batch = ring.consume(rng.randint(1, max_records))
                if len(batch):
                    seqs.append(check_pattern(batch))
                    if pause_every and rng.randrange(pause_every) == 0:
                        time.sleep(rng.uniform(0, pause))
                elif finished and ring.fill == 0:
                    break
                else:
                    time.sleep(0.0002)
            got = np.concatenate(seqs) if seqs else np.empty(0, np.uint64)
            conn.send(("ok", got.tobytes()))
        except AssertionError as exc:
            conn.send(("torn", str(exc)))
        finally:
            ring.close()


@pytest.fixture(scope="module")
def consumer_process():
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_consumer_main, args=(child,), daemon=True)
    proc.start()
    try:
        yield parent
    finally:
        try:
            parent.send(None)
        except OSError:
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _recv(conn, timeout: float = 60.0):
    if not conn.poll(timeout):
        raise AssertionError(f"consumer process did not answer within {timeout} s")
    return conn.recv()


_batches = st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=25)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=_batches,
    overflow=st.sampled_from(["drop", "block"]),
    max_records=st.integers(min_value=1, max_value=100),
    pause_every=st.sampled_from([0, 2, 10]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_cross_process_delivery(consumer_process, batches, overflow, max_records, pause_every, seed):
    """Every record arrives exactly once, in order, untorn (block); or losses are counted (drop)."""
    with no_leaks(unique_plant("prop")) as plant:
        ring = Ring.create(segment_name(plant, "ring"), 64, overflow=overflow, plant=plant)
        try:
            consumer_process.send((ring.name, max_records, pause_every, 0.003, seed))
            assert _recv(consumer_process) == "attached"
            total = sum(batches)
            written = 0
            seq = 0
            for n in batches:  # batch sizes up to 3x the capacity: wrap-around and overflow
                written += ring.publish(pattern(np.arange(seq, seq + n)), timeout=30)
                seq += n
            consumer_process.send("finished")
            status, payload = _recv(consumer_process)
            assert status == "ok", payload
            got = np.frombuffer(payload, dtype=np.uint64)
            assert ring.produced == written == len(got)
            assert written + ring.dropped == total
            if overflow == "block":
                assert ring.dropped == 0
                assert got.tolist() == list(range(total))
            else:
                assert np.all(np.diff(got.astype(np.int64)) > 0)  # in order, no repeats
                assert len(got) == 0 or int(got[-1]) < total
        finally:
            ring.close()
            ring.unlink()


def _producer_main(name: str, total: int, batch: int) -> None:
    ring = Ring.attach(name)
    seq = 0
    while seq < total:
        n = min(batch, total - seq)
        seq += ring.publish(pattern(np.arange(seq, seq + n)), timeout=30)
        ring.heartbeat()
    ring.close()


def test_producer_process_blocks_until_consumer_catches_up(make_ring):
    """A producer in another process under `block` with a small ring loses nothing."""
    ring = make_ring(capacity=64, overflow="block")
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_producer_main, args=(ring.name, 20_000, 100))
    proc.start()
    try:
        got = []
        count = 0
        deadline = time.monotonic() + 60
        while count < 20_000 and time.monotonic() < deadline:
            batch = ring.consume(37)
            if len(batch):
                got.append(check_pattern(batch))
                count += len(batch)
            else:
                time.sleep(0.0001)
        proc.join(30)
        assert proc.exitcode == 0
        assert np.concatenate(got).tolist() == list(range(20_000))
        assert ring.dropped == 0 and ring.blocked > 0
        wait_until(lambda: ring.producer_heartbeat_ns > 0, 5, "producer heartbeat")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def test_tail_is_the_last_records_written_consumed_or_not_across_the_wrap(make_ring):
    ring = make_ring(8)
    assert len(ring.tail(8)) == 0
    ring.publish(pattern(np.arange(5)))
    assert check_pattern(ring.tail(3)).tolist() == [2, 3, 4]
    assert check_pattern(ring.tail(100)).tolist() == [0, 1, 2, 3, 4]  # only what was written
    ring.consume(5)
    ring.publish(pattern(np.arange(5, 11)))  # wraps: slots 0-2 now hold 8, 9, 10
    assert check_pattern(ring.tail(8)).tolist() == list(range(3, 11))  # at most a capacity
    assert check_pattern(ring.tail(4)).tolist() == [7, 8, 9, 10]
    assert ring.consumed == 5  # reading the tail moves nothing
