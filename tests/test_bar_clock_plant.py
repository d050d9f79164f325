"""Bars close on the feed's clock: `configs/replay.yaml` under `streamctl up` (a paced replay of
the ESU4 MBP-1 sample) publishes exactly the bars of `streamctl replay --out` of the same file,
with no late tick, at several speeds. With bars closed by the wall clock, the 2024 events made
every time bar close at once: one or two trades per 60 s bar, ticks counted late."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
import zmq
from _common import free_port, wait_until
from _data import sample
from plant_helpers import PlantCli

from streamctl.bus.wire import parse_topic
from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
MBP1 = sample("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")


def _bars_by_topic(rows: list[dict]) -> dict[str, list[dict]]:
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if parse_topic(row["topic"]).kind == "bar":
            by_topic[row["topic"]].append(row)
    return dict(by_topic)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict[str, list[dict]]:
    """`streamctl replay MBP1 --config configs/replay.yaml --out`: the bars every run must give."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "bars.jsonl"
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp / "run"))
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(MBP1), "--config",
                           str(REPO / "configs/replay.yaml"), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    bars = _bars_by_topic([json.loads(line) for line in out.read_text().splitlines()])
    assert {"bar.1s.ESU4", "bar.60s.ESU4"} <= set(bars) and sum(map(len, bars.values())) > 40
    return bars


def _config(plant: PlantCli, name: str, speed: int, port: int) -> Path:
    """`configs/replay.yaml` as shipped, but one pass over the file (a second pass would go back
    in time), the sample by absolute path, and a free port."""
    config = yaml.safe_load((REPO / "configs/replay.yaml").read_text())
    config["name"] = name
    (feed,) = config["feeds"]
    feed["options"].update(files=[str(MBP1)], speed=speed, loop=False)
    config["publish"]["endpoint"] = f"tcp://127.0.0.1:{port}"
    return plant.write_config(name, yaml.safe_dump(config))


def _settled(plant: PlantCli, name: str) -> dict:
    """The worker's status once it has processed everything the finished feed wrote.

    An empty ring is not enough (the last batch may still be in the calculators): wait for a
    worker heartbeat newer than the moment the ring was seen empty, as the heartbeat comes from
    the same loop, after the batch.
    """
    wait_until(lambda: plant.process(name, "worker-0")["consumer_lag"] == 0, 60, "the worker to empty its ring")
    emptied = time.time_ns()

    def later_heartbeat() -> dict | None:
        asked = time.time_ns()
        worker = plant.process(name, "worker-0")
        age = worker["heartbeat_age_s"]
        return worker if age is not None and asked - age * 1e9 > emptied else None

    return wait_until(later_heartbeat, 60, "a worker heartbeat after its ring emptied")


@pytest.mark.parametrize("speed", [20, 50])
def test_paced_replay_under_up_gives_the_bars_of_replay(plant, replayed, speed):
    name = f"clk{speed}x{os.getpid() % 100000}"
    port = free_port()
    config = _config(plant, name, speed, port)
    context = zmq.Context()
    context.reconnect_ivl = 10  # connected before the hub binds: subscribed well before the first bar
    sub = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, context=context)
    try:
        sub.subscribe("bar.", "event.")
        rows: list[dict] = []
        events: list[tuple[str, str]] = []
        sub.on_message(lambda topic, payload: rows.append(to_row(topic, payload))
                       if parse_topic(topic).kind == "bar" else None)
        sub.on_event(lambda event: events.append((event.source, event.kind)))

        def heard(source: str, kind: str, timeout: float) -> None:
            wait_until(lambda: (source, kind) in events, timeout, f"event {kind} from {source}",
                       step=lambda: sub.poll(0.05))

        plant.run("up", str(config), "--detach", check=True)
        heard("esu4", "done", 120)
        late = _settled(plant, name)["drops"]["late"]
        plant.run("down", "--name", name, check=True)  # flushes the bars still open
        heard("worker-0", "stopped", 30)
    finally:
        sub.close()
        context.term()

    assert late == 0
    assert sub.gaps == 0
    ours = _bars_by_topic(rows)
    assert set(ours) == set(replayed)
    for topic, bars in replayed.items():
        assert ours[topic][:1] and ours[topic][0]["seq"] == 1, f"{topic}: subscribed too late to see its first bar"
        assert ours[topic] == bars, topic
