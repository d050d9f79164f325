"""Bars close on the feed's clock: `configs/replay.yaml` under `streamctl up` (a paced replay of
the ESU4 MBP-1 sample) publishes exactly the bars of `streamctl replay --out` of the same file,
with no late tick, at several speeds. With bars closed by the wall clock, the 2024 events made
every time bar close at once: one or two trades per 60 s bar, ticks counted late."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq
from _common import free_port, wait_until
from _data import sample
from _replayref import by_topic, replay_rows

from streamctl.bus.wire import parse_topic
from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
MBP1 = sample("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")


def _bars_by_topic(rows: list[dict]) -> dict[str, list[dict]]:
    return by_topic(rows, {"bar"})


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict[str, list[dict]]:
    """`streamctl replay MBP1 --config configs/replay.yaml --out`: the bars every run must give."""
    tmp = tmp_path_factory.mktemp("reference")
    bars = _bars_by_topic(replay_rows([MBP1], REPO / "configs/replay.yaml", tmp))
    assert {"bar.1s.ESU4", "bar.60s.ESU4"} <= set(bars) and sum(map(len, bars.values())) > 40
    return bars


@pytest.mark.parametrize("speed", [20, 50])
def test_paced_replay_under_up_gives_the_bars_of_replay(plant, replayed, speed):
    name = f"clk{speed}x{os.getpid() % 100000}"
    port = free_port()
    config = plant.replay_config(name, REPO / "configs/replay.yaml", MBP1, speed=speed, port=port)
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
        late = plant.settled(name)["drops"]["late"]
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
