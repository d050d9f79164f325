"""A worker killed with SIGKILL comes back with exactly the state it had (issue 9, item 2).

A real file is replayed under `streamctl up` (`configs/replay.yaml`: bars, session VWAP, EMA,
a depth-5 book) and worker-0 is SIGKILLed three times along the way: the ESU4 MBP-1 sample
(4 minutes, at 8x real speed: trades, bars, VWAP) and the ESM4 MBO sample (2 seconds at 1/5 of
real speed: 3,000 order-book events, books). Every bar equals `streamctl replay` of the file; every bar, VWAP, EMA and book
message (payload and `seq`) equals one uninterrupted pass of the calculators over the batches
the worker journaled; each topic's `seq` runs 1, 2, 3 ... with no gap and no repeat. Before
the journal, a restarted worker started its bars, VWAP and EMA again from nothing and its
`seq` went back to 1.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import zmq
from _common import free_port, wait_until
from _data import sample
from _replayref import by_topic, journal_rows, replay_rows

from streamctl.cli.config import load_config
from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
FILES = {
    "mbp1": ("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
             8, {"bar.60s.ESU4", "vwap.ESU4", "ema.12.ESU4"}),
    "mbo": ("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
            0.2, {"book.ESM4"}),
}
"""The sample, its replay speed, and topics it must publish."""
KINDS = {"bar", "vwap", "ema", "book"}
KILL_AT = (0.2, 0.45, 0.7)
"""Worker-0 is killed once the subscriber has seen these fractions of the messages `streamctl
replay` publishes on the kind the file is about (bars, books)."""


@pytest.mark.parametrize("which", sorted(FILES))
def test_a_worker_killed_three_times_publishes_what_an_uninterrupted_one_does(plant, tmp_path, which):
    path, speed, expected_topics = FILES[which]
    file = sample(path)
    kind = "book" if which == "mbo" else "bar"
    replayed = replay_rows([file], REPO / "configs/replay.yaml", tmp_path)
    reference = by_topic(replayed, {"bar"})
    n_total = sum(map(len, by_topic(replayed, {kind}).values()))
    name, port = f"jrn{which}{os.getpid() % 100000}", free_port()
    config = plant.replay_config(name, REPO / "configs/replay.yaml", file, speed=speed, port=port)
    context = zmq.Context()
    context.reconnect_ivl = 10  # connected before the hub binds: subscribed well before the first message
    sub = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, context=context)
    rows: list[dict] = []
    events: list[tuple[str, str]] = []
    try:
        sub.subscribe("bar.", "vwap.", "ema.", "book.", "event.")
        sub.on_message(lambda topic, payload: rows.append(to_row(topic, payload)))
        sub.on_event(lambda event: events.append((event.source, event.kind)))
        poll = lambda: sub.poll(0.05)  # noqa: E731
        plant.run("up", str(config), "--detach", check=True)
        pids = [plant.process(name, "worker-0")["pid"]]
        for fraction in KILL_AT:
            wait_until(lambda f=fraction: sum(r["topic"].startswith(f"{kind}.") for r in rows) >= f * n_total, 120,
                       f"{fraction:.0%} of the {kind} messages", poll)
            os.kill(pids[-1], signal.SIGKILL)
            restarted = wait_until(lambda: (p := plant.process(name, "worker-0"))["pid"] not in pids
                                   and p["state"] == "ready" and p, 60, "worker-0 restarted", poll)
            pids.append(restarted["pid"])
        wait_until(lambda: ("esu4", "done") in events, 120, "the feed (named esu4 in the config) to finish", poll)
        worker = plant.settled(name)
        plant.run("down", "--name", name, check=True)  # flushes the bars still open
        wait_until(lambda: ("worker-0", "stopped") in events, 30, "worker-0's last message", poll)
    finally:
        sub.close()
        context.term()

    assert worker["restarts"] == len(KILL_AT) and "restored" in worker["detail"]
    assert worker["drops"]["late"] == 0
    ours = by_topic(rows, KINDS)
    for topic, messages in ours.items():
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), f"{topic}: seq gap or repeat"
    assert by_topic(rows, {"bar"}) == reference
    journal = Path(os.environ["XDG_DATA_HOME"]) / "streamctl" / name / "journal" / "p0"
    uninterrupted = by_topic(journal_rows(journal, load_config(config).calculators), KINDS)
    assert set(ours) == set(uninterrupted) and expected_topics <= set(ours)
    for topic, messages in uninterrupted.items():
        assert ours[topic] == messages, topic
