"""The `ibkr` feed through the whole plant, against the local venue (`streamctl venue ibkr`).

Real parts only: the venue process speaks the TWS API protocol on 127.0.0.1, the plant runs
from the CLI, the test subscribes with the streamctl client. The bars equal those of `streamctl
replay` of the same file (IB stamps ticks in whole seconds, so the bars' event times are the
replay's floored to the second); a venue killed and started again (the gateway's daily restart)
gives a disconnect, a reconnect, a resubscription, and bars that carry on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _common import free_port, wait_until
from _data import sample
from _ibkr import ESU4_TRADES
from plant_helpers import PlantCli

from streamctl.bus.wire import parse_topic
from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(300)

_SECOND = 1_000_000_000


def _config(name: str, venue_port: int, pub_port: int, bars: str) -> str:
    return f"""\
name: {name}
feeds:
  - name: cme
    vendor: ibkr
    symbols: [ES]
    options:
      host: 127.0.0.1
      port: {venue_port}
      client_id: 11
      exchange: CME
      reconnect: {{delays: [0.2, 0.4], max_delay: 0.5, jitter: 0.0, max_failures: 20}}
partitions: {{count: 1}}
calculators:
  bars: {bars}
publish: {{endpoint: "tcp://127.0.0.1:{pub_port}"}}
"""


def _start_venue(plant: PlantCli, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "venue", "ibkr", "--port", str(port),
                             "--data", str(sample(ESU4_TRADES))],
                            env=plant.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT (...)"
    assert "listening" in line and "ESU4 (FUT 20240920)" in line, line
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)
    proc.stdout.close()


def _comparable(row: dict) -> dict:
    """A bar without its receive time, its last event time floored to the second (IB's resolution)."""
    out = {k: v for k, v in row.items() if k != "ts_recv"}
    out["ts_event"] = row["ts_event"] // _SECOND * _SECOND
    if not row["interval"].endswith("s"):  # tick bars span their first and last trade's event time
        out["ts_start"] = row["ts_start"] // _SECOND * _SECOND
        out["ts_end"] = row["ts_end"] // _SECOND * _SECOND
    return out


def _replayed(plant: PlantCli, config) -> dict[str, list[dict]]:
    out = plant.tmp / "replayed.jsonl"
    plant.run("replay", str(sample(ESU4_TRADES)), "--config", str(config), "--out", str(out), timeout=240, check=True)
    bars: dict[str, list[dict]] = defaultdict(list)
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if parse_topic(row["topic"]).kind == "bar":
            bars[row["topic"]].append(_comparable(row))
    return dict(bars)


def test_ibkr_feed_publishes_the_bars_of_replay(plant):
    name = f"ibp{os.getpid() % 100000}"
    venue_port, pub_port = free_port(), free_port()
    config = plant.write_config(name, _config(name, venue_port, pub_port, "{time: [60s], ticks: [50]}"))
    replayed = _replayed(plant, config)
    assert set(replayed) == {"bar.60s.ESU4", "bar.50t.ESU4"} and len(replayed["bar.60s.ESU4"]) == 4

    venue = _start_venue(plant, venue_port)
    rows: list[dict] = []
    events: list[tuple[str, str, str]] = []
    trades: list = []
    # The feed announces the front month as soon as it is connected, possibly before a subscriber
    # waiting for the hub has (re)connected: take everything since the plant started from the
    # recovery service, then live.
    started = datetime.now(UTC)
    sub = None
    try:
        plant.run("up", str(config), "--detach", check=True)
        # The service is asked once, at subscribe; on a loaded 2-core runner its first answer can
        # take longer than the client's default 2 s, and an unanswered `since` loses the start.
        sub = Subscriber(f"tcp://127.0.0.1:{pub_port}", since=started, recovery_timeout=15)
        sub.on_message(lambda topic, payload: rows.append(to_row(topic, payload))
                       if parse_topic(topic).kind == "bar" else None)
        sub.on_event(lambda e: events.append((e.source, e.kind, e.message)))
        sub.on_trade(trades.append)
        sub.subscribe("bar.", "event.", "trade.ESU4")
        wait_until(lambda: len(trades) >= 120, 90, "the file's 120 trades", step=lambda: sub.poll(0.1))
        assert plant.process(name, "cme")["drops"]["late"] == 0
        plant.run("down", "--name", name, check=True)  # flushes the bars still open
        wait_until(lambda: ("worker-0", "stopped") in [(s, k) for s, k, _ in events], 30, "the worker to stop",
                   step=lambda: sub.poll(0.1))
    finally:
        if sub is not None:
            sub.close()
        _stop(venue)
    assert len(trades) == 120 and sub.gaps == 0
    assert any(k == "system" and m.startswith("ES -> ESU4 (conId") and "front month" in m for _, k, m in events)
    ours: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        ours[row["topic"]].append(_comparable(row))
    for topic, bars in replayed.items():
        for got, want in zip(ours[topic], bars, strict=True):
            assert got == want, {k: (got.get(k), want.get(k)) for k in want if got.get(k) != want.get(k)}
    assert set(ours) == set(replayed)


def test_a_venue_restart_reconnects_resubscribes_and_the_bars_carry_on(plant):
    name = f"ibr{os.getpid() % 100000}"
    venue_port, pub_port = free_port(), free_port()
    config = plant.write_config(name, _config(name, venue_port, pub_port, "{time: [60s], ticks: [100]}"))
    plant.run("up", str(config), "--detach", check=True)  # the gateway is not up yet: the feed retries
    sub = Subscriber(f"tcp://127.0.0.1:{pub_port}")
    trades, bars, events = [], [], []
    sub.on_trade(trades.append)
    sub.on_bar(lambda b: bars.append(b) if b.interval == "100t" else None)
    sub.on_event(events.append)
    sub.subscribe("trade.ESU4", "bar.100t.ESU4", "event.cme")

    def pump_until(condition, timeout: float, what: str) -> None:
        wait_until(lambda: sub.poll(0.1) >= 0 and condition(), timeout, what, interval=0)

    def kinds(kind: str) -> int:
        return sum(1 for e in events if e.kind == kind)

    venue = None
    try:
        pump_until(lambda: kinds("reconnect_failed") > 0, 30, "the feed's first retry event")
        venue = _start_venue(plant, venue_port)
        pump_until(lambda: len(trades) >= 120 and bars, 60, "the file's 120 trades")
        assert len(trades) == 120 and [b.trades for b in bars] == [100]

        before = kinds("disconnect")
        _stop(venue)  # the gateway's daily restart: the socket closes ...
        pump_until(lambda: kinds("disconnect") > before, 30, "a disconnect event")
        venue = _start_venue(plant, venue_port)  # ... and it is back on the same port
        pump_until(lambda: len(trades) >= 240 and len(bars) >= 2, 60, "the trades after the reconnect")
        assert kinds("reconnect") >= 1
        assert sum(1 for e in events if e.kind == "system" and e.message.startswith("ES -> ESU4")) == 2  # resolved again
        assert [b.trades for b in bars] == [100, 100]  # the tick bars carry on across the restart
        status = plant.process(name, "cme")
        assert status["reconnects"] >= 1 and status["state"] == "ready"
    finally:
        sub.close()
        if venue is not None:
            _stop(venue)


def test_the_shipped_config_validates_with_its_environment_and_names_what_is_missing(plant):
    config = str(Path(__file__).resolve().parents[1] / "configs" / "ibkr.yaml")
    missing = plant.run("validate", config)
    assert missing.returncode == 2 and "IB_HOST" in missing.stderr + missing.stdout
    plant.env.update(IB_HOST="127.0.0.1", IB_PORT="4002", IB_CLIENT_ID="1")
    assert plant.run("validate", config, check=True).stdout.startswith("ok: plant ibkr: feeds cme (ibkr)")
    plant.env["IB_PORT"] = "70000"
    bad = plant.run("validate", config)
    assert bad.returncode == 2 and "feeds[0].options.port" in bad.stderr + bad.stdout
