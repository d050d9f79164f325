"""The `databento` feed through the whole plant, against the local gateway (`streamctl venue`).

Real parts only: the venue process speaks Databento's live protocol on 127.0.0.1, the plant
runs from the CLI, and the test subscribes with the streamctl client. The gateway is stopped
and started again mid-stream, then taken away for good.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _common import free_port, wait_until
from _data import sample
from _databento import ESU4_TRADES, KEY, plant_yaml
from plant_helpers import PlantCli

from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(240)


def _start_venue(plant: PlantCli, data: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "venue", "databento", "--port", str(port),
                             "--data", data, "--key", KEY, "--heartbeat", "1"],
                            env=plant.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT"
    assert "listening" in line, line
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def test_databento_feed_through_the_plant_with_gateway_restart_and_give_up(plant):
    data = sample(ESU4_TRADES)
    name = f"dbp{os.getpid() % 100000}"
    gw_port, pub_port = free_port(), free_port()
    plant.env["DATABENTO_API_KEY"] = KEY
    config = plant.write_config(name, plant_yaml(name, gw_port, pub_port, ticks="[100]", options="""\
      heartbeat_interval_s: 1
      liveness_timeout_s: 3
      resume: false
      reconnect: {delays: [0.2, 0.4], max_delay: 0.5, jitter: 0.0, max_failures: 12}"""))
    # `resume: false`: the restarted gateway serves its file again to a session from "now", and
    # the plant takes it as new data (resuming is test_databento_resume_plant.py).
    # The plant starts while the gateway is still down: the feed retries on its schedule.
    plant.run("up", str(config), "--detach", check=True)
    sub = Subscriber(f"tcp://127.0.0.1:{pub_port}")
    trades, bars, events = [], [], []
    sub.on_trade(trades.append)
    sub.on_bar(bars.append)
    sub.on_event(events.append)
    sub.subscribe("trade.ESU4", "bar.100t.ESU4", "event.glbx")

    def pump_until(condition, timeout: float, what: str) -> None:
        wait_until(lambda: sub.poll(0.1) >= 0 and condition(), timeout, what, interval=0)

    def kinds(kind: str) -> int:
        return sum(1 for e in events if e.kind == kind)

    try:
        # Slow joiner: wait until a retry's `disconnect` event reaches us, so nothing after is missed.
        pump_until(lambda: kinds("reconnect_failed") > 0, 30, "the feed's first retry event")
        venue = _start_venue(plant, data, gw_port)
        pump_until(lambda: len(trades) >= 120 and bars, 60, "the file's 120 trades")
        assert len(trades) == 120 and [b.trades for b in bars] == [100]
        assert plant.process(name, "glbx")["state"] == "ready"

        before = kinds("disconnect")
        _stop(venue)  # gateway dies mid-session ...
        pump_until(lambda: kinds("disconnect") > before, 30, "a disconnect event")
        venue = _start_venue(plant, data, gw_port)  # ... and comes back on the same port
        pump_until(lambda: len(trades) >= 240 and len(bars) >= 2, 60, "the trades after reconnect")
        assert any(e.kind == "reconnect" for e in events)
        assert [b.trades for b in bars] == [100, 100]  # the tick bars carry on across the reconnect
        status = plant.process(name, "glbx")
        assert status["reconnects"] >= 1 and status["records_in"] >= 240

        _stop(venue)  # gone for good: the feed gives up after `max_failures` and says so
        wait_until(lambda: plant.process(name, "glbx")["state"] == "failed", 60, "the feed to give up")
        pump_until(lambda: kinds("error") + kinds("failed") > 0, 10, "the give-up event")
        assert plant.process(name, "worker-0")["state"] == "ready"  # the rest of the plant is unharmed
    finally:
        sub.close()
