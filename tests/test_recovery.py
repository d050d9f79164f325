"""Subscriber recovery and last values (issue 9, item 3), against a running simulator plant.

A subscriber cut off for several seconds (through a TCP relay the test drops), one that joins
late from history, and one that starts from the last values all end with every message of their
topics, `seq` consecutive, payloads equal to those of a subscriber that was there all along.
`tail --since` and `tail --last` through the CLI. Before the recovery service, the cut-off one
saw a `SequenceGap` and had no way to get the missing messages.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from _common import free_port, wait_until
from _relay import Relay

from streamctl.bus.recovery import ask
from streamctl.cli.tailing import to_row
from streamctl.client import SequenceGap, Subscriber

pytestmark = pytest.mark.timeout(240)

TOPICS = ("bar.1s.", "vwap.", "ema.", "trade.AAPL")


def _config(name: str, port: int, recovery: int) -> str:
    return f"""\
name: {name}
feeds:
  - {{name: sim, vendor: sim, symbols: [AAPL, MSFT, GOOGL], options: {{rate: 200, seed: 3}}}}
calculators:
  bars: {{time: [1s], close_delay: 0.1}}
  vwap: {{rolling_window: 20}}
  ema: [5]
publish: {{endpoint: "tcp://127.0.0.1:{port}", recovery: {{endpoint: "tcp://127.0.0.1:{recovery}"}}}}
"""


class _Record:
    """Every message a subscriber dispatched, per topic: (seq, row) in arrival order."""

    def __init__(self, sub: Subscriber):
        self.by_topic: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        self.errors: list[SequenceGap] = []
        sub.on_message(self._on)
        sub.on_error(lambda err: self.errors.append(err) if isinstance(err, SequenceGap) else None)

    def _on(self, topic: str, payload) -> None:
        for item in payload if isinstance(payload, list) else [payload]:
            self.by_topic[topic].append((item.seq, to_row(topic, item)))

    def seqs(self, topic: str) -> list[int]:
        return [seq for seq, _ in self.by_topic[topic]]


def _consecutive(record: _Record, topic: str) -> bool:
    seqs = record.seqs(topic)
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _same_as(record: _Record, truth: _Record, topic: str) -> None:
    """`record`'s messages of `topic` are consecutive and equal `truth`'s of the same seqs."""
    assert _consecutive(record, topic), (topic, record.seqs(topic)[:50])
    reference = dict(truth.by_topic[topic])
    for seq, row in record.by_topic[topic]:
        if seq in reference:
            assert row == reference[seq], (topic, seq)


@pytest.fixture
def sim_plant(plant):
    name, port, recovery = f"rec{os.getpid() % 100000}", free_port(), free_port()
    started = datetime.now(UTC)
    plant.run("up", str(plant.write_config(name, _config(name, port, recovery))), "--detach", check=True)
    return plant, name, port, recovery, started


def test_a_cut_off_a_late_and_a_last_value_subscriber_get_every_message_in_order(sim_plant):
    plant, name, port, recovery, started = sim_plant
    rec = f"tcp://127.0.0.1:{recovery}"
    relay = Relay(port)
    subs: list[Subscriber] = []
    try:
        always = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, recovery=rec)
        cut = Subscriber(f"tcp://127.0.0.1:{relay.port}", rcvhwm=0, recovery=rec)
        subs += [always, cut]
        truth, cut_off = _Record(always), _Record(cut)
        for sub in subs:
            sub.subscribe(*TOPICS)

        def poll_all() -> None:
            for sub in subs:
                sub.poll(0.02)

        wait_until(lambda: len(cut_off.by_topic["bar.1s.AAPL"]) >= 2, 60, "bars through the relay", poll_all)
        before = len(truth.by_topic["bar.1s.AAPL"])
        relay.cut()
        wait_until(lambda: not cut.connected, 30, "the relay's cut to be seen", poll_all)
        wait_until(lambda: len(truth.by_topic["bar.1s.AAPL"]) >= before + 4, 60, "4 bars while cut off", poll_all)
        relay.resume()
        late = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, recovery=rec, since=started)
        current = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, recovery=rec, last=True)
        subs += [late, current]
        joined, lasts = _Record(late), _Record(current)
        late.subscribe(*TOPICS)
        last_seq_then = truth.seqs("vwap.AAPL")[-1]
        current.subscribe(*TOPICS)
        assert lasts.seqs("vwap.AAPL")[:1] >= [last_seq_then]  # the current value, before any live message
        mark = len(truth.by_topic["bar.1s.AAPL"])
        wait_until(lambda: len(truth.by_topic["bar.1s.AAPL"]) >= mark + 3, 60, "3 more bars", poll_all)
        end = truth.seqs("vwap.AAPL")[-1]
        wait_until(lambda: all(r.seqs("vwap.AAPL")[-1:] >= [end] for r in (cut_off, joined, lasts)), 30,
                   "everyone at the same point", poll_all)
    finally:
        for sub in subs:
            sub.close()
        relay.close()

    assert cut_off.errors == [] and cut.recovered > 0  # the cut was filled, not reported
    assert joined.seqs("bar.1s.AAPL")[0] == 1 and joined.seqs("vwap.AAPL")[0] == 1  # from the start
    for topic in ("bar.1s.AAPL", "bar.1s.MSFT", "vwap.AAPL", "vwap.GOOGL", "ema.5.MSFT", "trade.AAPL"):
        for record in (cut_off, joined, lasts):
            _same_as(record, truth, topic)
        assert len(cut_off.seqs(topic)) > 0
    assert joined.errors == [] and lasts.errors == [] and late.duplicates + current.duplicates >= 0


def test_tail_since_and_last_through_the_cli(sim_plant):
    plant, name, port, recovery, _ = sim_plant
    rec = f"tcp://127.0.0.1:{recovery}"
    status = plant.status(name)
    assert status["recovery"] == rec and status["journal"].endswith(f"streamctl/{name}/journal")
    wait_until(lambda: (ask(rec, {"op": "last", "pattern": "bar.1s.AAPL"}, timeout=5) or {}).get("messages"), 60,
               "a first 1 s bar at the recovery service")
    wait_until(lambda: len(ask(rec, {"op": "history", "topic": "bar.1s.AAPL", "from_seq": 1},
                               timeout=5)["messages"]) >= 3, 60, "three 1 s bars")
    since = plant.run("tail", "bar.1s.AAPL", "--name", name, "--since", "10m", "--json", "--count", "3",
                      "--timeout", "60", check=True)
    rows = [json.loads(line) for line in since.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3] and {r["topic"] for r in rows} == {"bar.1s.AAPL"}
    held = ask(rec, {"op": "last", "pattern": "vwap."}, timeout=5)["messages"]
    last = plant.run("tail", "vwap.", "--name", name, "--last", "--json", "--count", str(len(held)),
                     "--timeout", "60", check=True)
    rows = [json.loads(line) for line in last.stdout.splitlines()]
    assert sorted(r["topic"] for r in rows) == sorted(topic for topic, *_ in held)
    assert all(r["seq"] >= seq for r, (_, seq, _, _) in zip(sorted(rows, key=lambda r: r["topic"]),
                                                            sorted(held), strict=True))
    bad = plant.run("tail", "vwap.", "--name", name, "--since", "ten minutes", "--count", "1")
    assert bad.returncode == 2 and "`--since`" in bad.stderr


def test_a_taken_recovery_port_costs_the_history_not_the_plant(plant):
    """The hub forwards without its recovery service when the service's endpoint is taken."""
    import socket

    name, port = f"rectaken{os.getpid() % 100000}", free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        recovery = taken.getsockname()[1]
        plant.run("up", str(plant.write_config(name, _config(name, port, recovery))), "--detach", check=True)
        hub = plant.process(name, "hub")
        assert hub["state"] == "ready" and "recovery unavailable" in hub["detail"]
        with Subscriber(f"tcp://127.0.0.1:{port}", recovery=False) as sub:
            bars: list = []
            sub.on_bar(bars.append)
            sub.subscribe("bar.1s.")
            wait_until(lambda: bars, 60, "a bar from the plant", lambda: sub.poll(0.05))


def test_history_after_hands_back_decoded_messages_without_dispatching_them(sim_plant):
    """What a sink refills with: `topic` after a seq (up to `through`), as live payloads, while the
    subscriber's own dispatch and seq tracking go on untouched."""
    plant, name, port, recovery, _ = sim_plant
    with Subscriber(f"tcp://127.0.0.1:{port}", recovery=f"tcp://127.0.0.1:{recovery}") as sub:
        truth = _Record(sub)
        sub.subscribe("bar.1s.AAPL", "trade.AAPL")
        wait_until(lambda: len(truth.seqs("bar.1s.AAPL")) >= 4 and len(truth.seqs("trade.AAPL")) >= 40, 60,
                   "bars and trades", step=lambda: sub.poll(0.1))
        bars, trades = truth.seqs("bar.1s.AAPL"), truth.seqs("trade.AAPL")
        dispatched = sub.messages_in
        got, complete = sub.history_after("bar.1s.AAPL", bars[0], through=bars[2])
        assert complete and [b.seq for b in got] == bars[1:3]
        assert [to_row("bar.1s.AAPL", b) for b in got] == [row for _, row in truth.by_topic["bar.1s.AAPL"][1:3]]
        arrays, complete = sub.history_after("trade.AAPL", trades[9])
        held = [t.seq for array in arrays for t in array]  # whole arrays: the first may start before
        assert complete and held[0] <= trades[10] and set(trades[10:]) <= set(held)
        assert sub.messages_in == dispatched
        more = len(truth.seqs("bar.1s.AAPL")) + 2
        wait_until(lambda: len(truth.seqs("bar.1s.AAPL")) >= more, 60, "live bars", step=lambda: sub.poll(0.1))
    assert _consecutive(truth, "bar.1s.AAPL") and _consecutive(truth, "trade.AAPL") and not truth.errors
    with Subscriber(f"tcp://127.0.0.1:{port}", recovery=False) as without:  # no service: nothing, incomplete
        assert without.history_after("bar.1s.AAPL", 0) == ([], False)
