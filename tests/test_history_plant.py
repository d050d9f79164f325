"""History beyond memory (issue 9, item 3): a simulator plant keeping 1 KiB per topic in memory
answers from its output journal on disk. A subscriber asking from seq 0 after thousands of
messages gets every one, equal to what a subscriber connected all along saw; `tail --since`
through the CLI pages past 10,000 messages; a hub killed with SIGKILL and restarted by the
supervisor leaves its history readable; after `down` and `up`, `since` spans both runs while
`from_seq` is the new run's. Without the output journal (`history: {enabled: false}`) the same
plant forgets all but the newest messages, which is what these tests would otherwise see.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _common import free_port, wait_until

from streamctl.bus.recovery import ask
from streamctl.cli.tailing import to_row
from streamctl.client import SequenceGap, Subscriber

pytestmark = pytest.mark.timeout(300)

TOPIC = "vwap.AAPL"


def _config(name: str, port: int, recovery: int, history: str = "") -> str:
    return f"""\
name: {name}
feeds:
  - {{name: sim, vendor: sim, symbols: [AAPL, MSFT], options: {{rate: 3000, seed: 5}}}}
calculators:
  bars: {{time: [1s], close_delay: 0.1}}
  vwap: {{rolling_window: 20}}
publish:
  endpoint: "tcp://127.0.0.1:{port}"
  raw_trades: false
  raw_quotes: false
  recovery: {{endpoint: "tcp://127.0.0.1:{recovery}", topic_bytes: 1024{history}}}
"""


class _Seen:
    """Every message a subscriber dispatched, per topic: seq -> row, and the gaps it was told of."""

    def __init__(self, sub: Subscriber):
        self.rows: dict[str, dict[int, dict]] = defaultdict(dict)
        self.order: dict[str, list[int]] = defaultdict(list)
        self.gaps: list[SequenceGap] = []
        sub.on_message(self._on)
        sub.on_error(lambda err: self.gaps.append(err) if isinstance(err, SequenceGap) else None)

    def _on(self, topic: str, payload) -> None:
        self.rows[topic][payload.seq] = to_row(topic, payload)
        self.order[topic].append(payload.seq)


def _history(rec: str, topic: str, from_seq: int) -> tuple[list[int], bool]:
    """`topic`'s seqs from `from_seq` on, every page, and whether the first page was complete."""
    seqs: list[int] = []
    complete = None
    while True:
        reply = ask(rec, {"op": "history", "topic": topic, "from_seq": from_seq}, timeout=30)
        assert reply is not None and reply["ok"]
        complete = reply["complete"] if complete is None else complete
        seqs += [m[1] for m in reply["messages"]]
        if not reply["more"]:
            return seqs, bool(complete)
        from_seq = seqs[-1] + 1


def _since_count(rec: str, pattern: str, since_ns: int) -> int:
    count = 0
    while True:
        reply = ask(rec, {"op": "history", "pattern": pattern, "since_ns": since_ns}, timeout=30)
        assert reply is not None and reply["ok"]
        count += len(reply["messages"])
        if not reply["more"]:
            return count
        since_ns = reply["next_ns"]


@pytest.fixture
def history_plant(plant):
    name, port, recovery = f"hist{uuid.uuid4().hex[:8]}", free_port(), free_port()  # its own data dir
    config = plant.write_config(name, _config(name, port, recovery))
    started = datetime.now(UTC)
    plant.run("up", str(config), "--detach", check=True)
    return plant, name, config, port, f"tcp://127.0.0.1:{recovery}", started


def test_from_seq_zero_after_thousands_of_messages_equals_a_subscriber_there_all_along(history_plant):
    plant, name, _, port, rec, _ = history_plant
    with Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, recovery=rec) as always:
        truth = _Seen(always)
        always.subscribe(TOPIC)
        wait_until(lambda: len(truth.order[TOPIC]) >= 3000, 180, "3,000 VWAPs of AAPL", lambda: always.poll(0.1))
        memory = ask(rec, {"op": "history", "topic": TOPIC, "from_seq": 0}, timeout=30)
        with Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, recovery=rec, since=0) as late:
            joined = _Seen(late)
            late.subscribe(TOPIC)
            end = truth.order[TOPIC][-1]
            wait_until(lambda: joined.order[TOPIC][-1:] >= [end + 50], 120, "the late one to go on live",
                       lambda: (late.poll(0.05), always.poll(0.05)))
    seqs = joined.order[TOPIC]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3000 and not joined.gaps
    shared = [s for s in seqs if s in truth.rows[TOPIC]]
    assert len(shared) >= 3000 and all(joined.rows[TOPIC][s] == truth.rows[TOPIC][s] for s in shared)
    assert late.recovered >= 3000
    assert memory is not None and memory["complete"]  # answered from disk: memory holds a few only
    hub_memory = plant.process(name, "hub")
    assert hub_memory["state"] == "ready"


def test_tail_since_through_the_cli_pages_beyond_memory(history_plant):
    plant, name, _, _, rec, started = history_plant
    since_ns = int(started.timestamp() * 1e9)
    wait_until(lambda: _since_count(rec, "vwap.", since_ns) > 10_500, 180, "over 10,500 VWAPs at the service")
    out = plant.run("tail", "vwap.", "--name", name, "--since", "10m", "--json", "--count", "10500",
                    "--timeout", "120", timeout=240, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 10_500
    by_topic: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_topic[row["topic"]].append(row["seq"])
    assert set(by_topic) == {"vwap.AAPL", "vwap.MSFT"}
    for seqs in by_topic.values():
        assert seqs == list(range(1, len(seqs) + 1))


def test_a_hub_killed_and_restarted_leaves_its_history_readable(history_plant):
    plant, name, _, _, rec, started = history_plant
    wait_until(lambda: len(_history(rec, TOPIC, 0)[0]) >= 1000, 180, "1,000 VWAPs of AAPL")
    before, complete = _history(rec, TOPIC, 0)
    assert complete and before == list(range(1, len(before) + 1))
    hub = plant.process(name, "hub")
    os.kill(hub["pid"], signal.SIGKILL)
    wait_until(lambda: (p := plant.process(name, "hub"))["pid"] != hub["pid"] and p["state"] == "ready", 60,
               "the hub restarted")
    wait_until(lambda: ask(rec, {"op": "last", "pattern": TOPIC}, timeout=5), 60, "the new hub's service")
    since = []
    since_ns: int | None = int(started.timestamp() * 1e9)
    while since_ns is not None:
        reply = ask(rec, {"op": "history", "pattern": TOPIC, "since_ns": since_ns}, timeout=30)
        since += [m[1] for m in reply["messages"]]
        since_ns = reply.get("next_ns") if reply["more"] else None
    assert since[:len(before)] == before  # everything the killed hub had forwarded is still there
    last = ask(rec, {"op": "last", "pattern": TOPIC}, timeout=5)["messages"]
    assert last and last[0][1] >= before[-1]
    assert plant.status(name)["history"] == str(Path(os.environ["XDG_DATA_HOME"], "streamctl", name, "history"))
    files = sorted(Path(plant.status(name)["history"]).glob("*.hist"))
    assert len(files) >= 2  # the restarted hub opened its own file


def test_history_after_down_and_up_by_time_spans_runs_by_seq_is_the_new_run(history_plant):
    plant, name, config, _, rec, started = history_plant
    wait_until(lambda: len(_history(rec, TOPIC, 0)[0]) >= 500, 180, "500 VWAPs of AAPL")
    plant.run("down", "--name", name, check=True)
    first_run = _count_on_disk_since(plant, name, config, rec, started)
    assert first_run >= 500
    seqs, complete = _history(rec, TOPIC, 0)
    assert complete and seqs == list(range(1, len(seqs) + 1))  # the new run's seq 1 on, not the old run's
    whole = _since_count(rec, TOPIC, int(started.timestamp() * 1e9))
    assert whole >= first_run + 1  # the first run's messages, then the second's


def _count_on_disk_since(plant, name: str, config: Path, rec: str, started: datetime) -> int:
    """Start the plant again and count `TOPIC`'s messages of the first run that `since` returns
    (those before the second run's seq 1)."""
    plant.run("up", str(config), "--detach", check=True)
    wait_until(lambda: (ask(rec, {"op": "last", "pattern": TOPIC}, timeout=5) or {}).get("messages"), 60,
               "the second run's first VWAP")
    seqs: list[int] = []
    since_ns: int | None = int(started.timestamp() * 1e9)
    while since_ns is not None:
        reply = ask(rec, {"op": "history", "pattern": TOPIC, "since_ns": since_ns}, timeout=30)
        seqs += [m[1] for m in reply["messages"]]
        since_ns = reply.get("next_ns") if reply["more"] else None
    restart = next(i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1])
    assert seqs[:restart] == list(range(1, restart + 1)) and seqs[restart] == 1
    assert seqs[restart:] == list(range(1, len(seqs) - restart + 1))
    return restart


def test_without_the_output_journal_the_same_plant_forgets(plant):
    name, port, recovery = f"nohist{uuid.uuid4().hex[:8]}", free_port(), free_port()
    config = _config(name, port, recovery, history=", history: {enabled: false}")
    plant.run("up", str(plant.write_config(name, config)), "--detach", check=True)
    rec = f"tcp://127.0.0.1:{recovery}"
    wait_until(lambda: (ask(rec, {"op": "last", "pattern": TOPIC}, timeout=5) or {}).get("messages", [[0, 0]])[0][1]
               >= 500, 180, "500 VWAPs of AAPL")
    seqs, complete = _history(rec, TOPIC, 0)
    assert not complete and seqs[0] > 1
    assert plant.status(name)["history"] is None
    assert not Path(os.environ["XDG_DATA_HOME"], "streamctl", name, "history").exists()
