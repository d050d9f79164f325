"""A restarted worker loses nothing to the slow joiner (issue 8, defect 6), nor its place.

Before the fix a worker killed with -9 came back and published at once, before the hub's
subscriptions had reached its new socket, so its first messages went nowhere: a subscriber saw
`trade.AAPL` seq go from 8579 to 30. Now a publisher waits for the hub's subscriptions
(`Publisher.wait_subscribed`), and the restarted worker, rebuilt from its journal, sends the
next seq of every topic.
"""

from __future__ import annotations

import os
import signal

import pytest
from _common import free_port, wait_until
from _pubsub import ProxyProcess
from plant_helpers import demo_config

from streamctl.bus import wire
from streamctl.bus.publisher import Publisher
from streamctl.client import Reconnect, SequenceGap, Subscriber

pytestmark = pytest.mark.timeout(240)

_SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA")


def test_a_new_publisher_waits_for_every_subscription_then_loses_nothing(cleanup):
    """Bus level: with 300 exact subscriptions held by the hub, a publisher that waited publishes
    one message on each topic at once, and every one arrives."""
    with ProxyProcess() as proxy:
        sub = Subscriber(proxy.backend)
        cleanup.append(sub)
        topics = [f"event.s{i:03d}" for i in range(300)]
        sub.subscribe(*topics)
        seen: set[str] = set()
        sub.on_message(lambda topic, payload: seen.add(topic))
        # The subscriptions must be at the hub before the publisher connects: a first publisher
        # (the control) proves it by getting one message through on the last topic.
        with Publisher(proxy.frontend, src="control") as control:
            assert control.wait_subscribed(30)
            wait_until(lambda: topics[-1] in seen, 30, "the control message", lambda: (
                control.publish(topics[-1], wire.Event(source="c", kind="probe", message="", ts=0)), sub.poll(0.02)))
        seen.clear()
        pub = Publisher(proxy.frontend, src="fresh")
        cleanup.append(pub)
        assert pub.wait_subscribed(30)
        for topic in topics:
            pub.publish(topic, wire.Event(source="fresh", kind="probe", message="", ts=0))
        wait_until(lambda: len(seen) == len(topics), 30, "every topic's message", lambda: sub.poll(0.05))


def test_kill_9_of_a_worker_its_restart_goes_on_with_the_next_seq_on_every_topic(plant):
    """A live (wall-clocked) simulator: the restarted worker rebuilds itself from its journal
    (issue 9), so each trade topic's seq runs on from where it was: no restart seen by the
    subscriber, no gap, no repeat. (Before the journal, the seq went back to 1.)"""
    name, port = f"rst{os.getpid() % 100000}", free_port()
    plant.run("up", str(plant.write_config(name, demo_config(name, port, partitions=1))), "--detach", check=True)
    topics = [f"trade.{s}" for s in _SYMBOLS]
    with Subscriber(f"tcp://127.0.0.1:{port}") as sub:
        spans: dict[str, list[tuple[int, int]]] = {t: [] for t in topics}
        """Per topic, the (first, last) seq of each message from worker-0."""
        gaps: list[SequenceGap] = []
        restarts: list[Reconnect] = []
        sub.on_message(lambda topic, trades: spans[topic].append((trades[0].seq, trades[-1].seq))
                       if trades[0].src == "worker-0" else None)
        sub.on_error(lambda err: gaps.append(err) if isinstance(err, SequenceGap) else None)
        sub.on_reconnect(lambda info: restarts.append(info) if info.reason == "publisher_restart" else None)
        sub.subscribe(*topics)
        wait_until(lambda: all(len(f) >= 3 for f in spans.values()), 60, "trades of every symbol",
                   lambda: sub.poll(0.05))
        before = plant.process(name, "worker-0")
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: plant.process(name, "worker-0")["pid"] != before["pid"], 60, "worker-0 restarted",
                   lambda: sub.poll(0.05))
        seen = {t: len(f) for t, f in spans.items()}
        wait_until(lambda: all(len(spans[t]) >= seen[t] + 3 for t in topics), 60,
                   "trades of every symbol from the restarted worker", lambda: sub.poll(0.05))
        assert plant.process(name, "worker-0")["restarts"] == 1
    for topic in topics:  # the subscriber joined a running plant: its first seq is wherever it was
        assert all(first == last + 1 for (first, _), (_, last) in zip(spans[topic][1:], spans[topic], strict=False)), \
            topic
    assert gaps == [] and restarts == []
