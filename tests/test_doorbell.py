"""The rings' doorbell: a consumer asleep on a futex wakes when a producer publishes.

Real processes on real shared memory: the sleeping consumer is seen blocked in the kernel
(``futex_waitv`` in /proc/<pid>/syscall) before anything is published, and it sleeps with a
60 s timeout, so only the producer's wake-up can bring a record to it within the test's bound.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading

import numpy as np
import pytest
from _common import wait_until
from _shmutil import no_leaks, unique_plant
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ring import check_pattern, pattern

from streamctl.shm.doorbell import DoorbellError, futex_wait_any
from streamctl.shm.ring import Ring, wait_for_records
from streamctl.shm.segments import segment_name

_SYS_FUTEX_WAITV = 449
_ASLEEP_FOR = 60.0
"""The consumer's wait timeout: far past every bound below, so a timeout cannot pass for a wake-up."""


def _consumer(names: list[str], conn) -> None:
    """Attach, then loop: sleep on the doorbell, consume, report the sequence numbers."""
    rings = [Ring.attach(name) for name in names]
    for ring in rings:
        ring.consumer_attached()
    conn.send("attached")
    while True:
        wait_for_records(rings, _ASLEEP_FOR)
        for ring in rings:
            batch = ring.consume(1024)
            if len(batch):
                conn.send(check_pattern(batch).tolist())


def _producer(name: str, first: int, n: int, then_hang: bool) -> None:
    ring = Ring.attach(name)
    ring.heartbeat()
    ring.publish(pattern(np.arange(first, first + n)))
    if then_hang:  # to be SIGKILLed while the consumer sleeps
        signal.pause()
    ring.close()


def _blocked_in_futex_waitv(pid: int) -> bool:
    """The process is asleep in the kernel on futex_waitv (not polling)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:  # pragma: no cover - no /proc/<pid>/syscall: the flag alone must do
        return True
    return bool(fields) and fields[0] == str(_SYS_FUTEX_WAITV)


class _Plant:
    """Rings and spawned processes of one test, all gone afterwards."""

    def __init__(self, plant: str):
        self.plant = plant
        self.ctx = mp.get_context("spawn")
        self.rings: list[Ring] = []
        self.procs: list[mp.process.BaseProcess] = []

    def ring(self, purpose: str) -> Ring:
        ring = Ring.create(segment_name(self.plant, "ring", purpose), 64, plant=self.plant)
        self.rings.append(ring)
        return ring

    def start(self, target, *args) -> mp.process.BaseProcess:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def consumer(self, rings: list[Ring]):
        parent, child = self.ctx.Pipe()
        proc = self.start(_consumer, [r.name for r in rings], child)
        assert parent.poll(60) and parent.recv() == "attached"
        return proc, parent

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        for ring in self.rings:
            ring.close()
            ring.unlink()


@pytest.fixture
def plant():
    with no_leaks(unique_plant("bell")) as name:
        made = _Plant(name)
        try:
            yield made
        finally:
            made.close()


def _asleep(proc, rings: list[Ring]) -> None:
    wait_until(lambda: all(r.consumer_asleep for r in rings) and _blocked_in_futex_waitv(proc.pid), 30,
               "the consumer asleep on the doorbell")


def _received(conn, timeout: float = 30.0) -> list[int]:
    if not conn.poll(timeout):
        raise AssertionError(f"the sleeping consumer got nothing within {timeout} s: no wake-up")
    return conn.recv()


@pytest.mark.parametrize("which", [0, 1])
def test_a_publish_wakes_the_sleeping_consumer(plant, which):
    """One record from a producer process wakes a consumer process asleep on two rings."""
    rings = [plant.ring("a"), plant.ring("b")]
    consumer, conn = plant.consumer(rings)
    _asleep(consumer, rings)
    plant.start(_producer, rings[which].name, 7, 1, False)
    assert _received(conn) == [7]
    _asleep(consumer, rings)  # back to sleep, flag up again, nothing consumed twice
    assert not conn.poll(0)


def test_the_doorbell_survives_a_killed_producer_and_a_killed_consumer(plant):
    ring = plant.ring("a")
    consumer, conn = plant.consumer([ring])
    _asleep(consumer, [ring])
    producer = plant.start(_producer, ring.name, 0, 1, True)
    assert _received(conn) == [0]
    _asleep(consumer, [ring])
    beat = ring.producer_heartbeat_ns
    os.kill(producer.pid, signal.SIGKILL)  # killed while the consumer sleeps
    producer.join(10)
    assert consumer.is_alive() and _blocked_in_futex_waitv(consumer.pid)
    assert ring.producer_heartbeat_ns == beat  # the stale heartbeat the worker's clock reads
    plant.start(_producer, ring.name, 1, 2, False)  # the restarted producer's publish still rings
    assert _received(conn) == [1, 2]

    _asleep(consumer, [ring])
    os.kill(consumer.pid, signal.SIGKILL)  # killed asleep: its flag stays up
    consumer.join(10)
    assert ring.consumer_asleep
    ring.publish(pattern(np.arange(3, 4)))  # a wake-up nobody waits for is harmless
    consumer, conn = plant.consumer([ring])  # the restarted consumer lowers the stale flag
    assert _received(conn) == [3]
    _asleep(consumer, [ring])
    ring.publish(pattern(np.arange(4, 5)))
    assert _received(conn) == [4]


def test_wait_returns_at_once_when_records_wait(plant):
    """Records already published: no sleep at all (a 60 s timeout would hang the test)."""
    ring = plant.ring("a")
    ring.publish(pattern(np.arange(3)))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (wait_for_records([ring], _ASLEEP_FOR), done.set()), daemon=True)
    thread.start()
    assert done.wait(30)
    assert not ring.consumer_asleep


def test_futex_errors_name_the_call():
    with pytest.raises(DoorbellError, match="futex_waitv on 1 word"):
        futex_wait_any([(1, 0)], 1.0)  # an unmapped, misaligned address: EFAULT/EINVAL, not a hang


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=30),
    pauses=st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=30),
    switch=st.sampled_from([1e-6, 1e-5, 1e-4]),
)
def test_no_wake_up_is_lost_between_threads(batches, pauses, switch):
    """A producer thread publishing with drawn pauses against a consumer thread that sleeps 60 s
    at a time on the bell: every record arrives within the bound. Threads only interleave where
    the GIL switches (its interval is drawn small), so this drives the real calls hard, and it
    found a race in the fence's first compile; `test_doorbell_model` covers every ordering of
    the protocol's memory accesses."""
    with no_leaks(unique_plant("bellp")) as name:
        ring = Ring.create(segment_name(name, "ring"), 1024, plant=name)
        total = sum(batches)
        got: list[int] = []
        done = threading.Event()
        stop = threading.Event()

        def consume() -> None:
            while len(got) < total and not stop.is_set():
                wait_for_records([ring], _ASLEEP_FOR)
                got.extend(check_pattern(ring.consume(1024)).tolist())
            done.set()

        old = sys.getswitchinterval()
        sys.setswitchinterval(switch)
        consumer = threading.Thread(target=consume, daemon=True)
        seq = 0
        try:
            consumer.start()
            for i, n in enumerate(batches):
                for _ in range(pauses[i % len(pauses)]):  # a drawn number of bytecodes' delay
                    pass
                ring.publish(pattern(np.arange(seq, seq + n)))
                seq += n
            lost = not done.wait(30)
            stop.set()
            assert not lost, f"lost wake-up: {len(got)} of {total} records after the last publish"
            assert got == list(range(total))
        finally:
            sys.setswitchinterval(old)
            stop.set()
            if not done.is_set():  # wake the consumer so it ends before the ring is unmapped
                ring.publish(pattern(np.arange(seq, seq + 1)))
            consumer.join(30)
            ring.close()
            ring.unlink()
