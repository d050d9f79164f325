"""A Databento feed that loses its gateway connection, and one SIGKILLed, resume losslessly
through the whole plant (issue 9, item 2: "Databento live: from the last ts_event, using the
gateway's start replay").

The local gateway serves the real ESU4 MBP-1 sample at 8x real speed to `streamctl up`
(the calculators of `configs/replay.yaml`). Along the way the gateway cuts the session
(failure injection) and, later, the feed process is SIGKILLed. Each time the feed resubscribes
with ``start`` = the last ``ts_event`` its rings hold and drops what they already hold: the rings
get every record of the file exactly once, and every bar equals `streamctl replay` of the file.
Before the resume, each new session started the data again: records were repeated and the bars
were wrong.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
import zmq
from _common import free_port, wait_until
from _data import sample
from _databento import ESU4_MBP1, KEY
from _replayref import by_topic, replay_rows

from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, read_file

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent


def _records(path: Path) -> int:
    """Records our decoder makes of the file: 2,288 MBP-1, of which 120 trades are also a quote."""
    decoder = DbnDecoder(ts_recv="record")
    decoder.write(read_file(path))
    return len(decoder.finish().records)


def _without_ts_recv(bars: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {topic: [{k: v for k, v in bar.items() if k != "ts_recv"} for bar in messages]
            for topic, messages in bars.items()}


def _config(name: str, gateway_port: int, pub_port: int) -> str:
    config = yaml.safe_load((REPO / "configs/replay.yaml").read_text())
    config["name"] = name
    config["feeds"] = [{"name": "glbx", "vendor": "databento", "symbols": ["ESU4"], "options": {
        "dataset": "GLBX.MDP3", "schemas": ["mbp-1"], "key": "${DATABENTO_API_KEY}", "gateway": "127.0.0.1",
        "port": gateway_port, "heartbeat_interval_s": 1, "liveness_timeout_s": 5,
        "reconnect": {"delays": [0.2], "max_delay": 0.2, "jitter": 0.0, "max_failures": 20}}}]
    config["publish"]["endpoint"] = f"tcp://127.0.0.1:{pub_port}"
    return yaml.safe_dump(config)


def test_a_cut_connection_and_a_killed_feed_lose_and_repeat_nothing(plant, venues, tmp_path):
    file = sample(ESU4_MBP1)
    reference = by_topic(replay_rows([file], REPO / "configs/replay.yaml", tmp_path), {"bar"})
    n_bars = sum(map(len, reference.values()))
    n_records = _records(file)
    venue = venues.start([file], speed=8.0, heartbeat_interval=1.0)
    name, port = f"dbres{os.getpid() % 100000}", free_port()
    plant.env["DATABENTO_API_KEY"] = KEY
    config = plant.write_config(name, _config(name, venue.port, port))
    context = zmq.Context()
    context.reconnect_ivl = 10  # connected before the hub binds: subscribed well before the first message
    sub = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, context=context)
    rows: list[dict] = []
    events: list[tuple[str, str, str]] = []
    try:
        sub.subscribe("bar.", "event.")
        sub.on_message(lambda topic, payload: rows.append(to_row(topic, payload)))
        sub.on_event(lambda event: events.append((event.source, event.kind, event.message)))
        poll = lambda: sub.poll(0.05)  # noqa: E731
        bars = lambda: sum(r["topic"].startswith("bar.") for r in rows)  # noqa: E731
        plant.run("up", str(config), "--detach", check=True)

        wait_until(lambda: bars() >= 0.3 * n_bars, 120, "30% of the bars", poll)
        assert venue.drop_sessions() == 1  # the gateway cuts the session mid-stream
        wait_until(lambda: any(e[1] == "reconnect" for e in events), 60, "the reconnect", poll)

        wait_until(lambda: bars() >= 0.6 * n_bars, 120, "60% of the bars", poll)
        killed = plant.process(name, "glbx")["pid"]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: (p := plant.process(name, "glbx"))["pid"] != killed and p["state"] == "ready", 60,
                   "the feed restarted", poll)

        produced = lambda: sum(r["produced"] for r in plant.status(name)["rings"])  # noqa: E731
        wait_until(lambda: produced() >= n_records, 120, "every record in the ring", poll)
        worker = plant.settled(name)
        delivered = produced()
        plant.run("down", "--name", name, check=True)  # flushes the bars still open
        wait_until(lambda: ("worker-0", "stopped") in [e[:2] for e in events], 30, "worker-0's last message", poll)
    finally:
        sub.close()
        context.term()

    assert delivered == n_records  # each record of the file once: none lost, none repeated
    resumed = [m for source, kind, m in events if source == "glbx" and kind == "connected" and "replaying from" in m]
    assert len(resumed) == 2, events  # after the cut, and after the kill
    assert worker["drops"]["late"] == 0
    ours = by_topic(rows, {"bar"})
    for topic, messages in ours.items():
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), f"{topic}: seq gap or repeat"
    # Every field but `ts_recv`: live, that is when our feed received the record, not the file's.
    assert _without_ts_recv(ours) == _without_ts_recv(reference)
