"""The `alpaca` feed through the whole plant, against the local venue (`streamctl venue alpaca`).

Real parts only: the venue process speaks Alpaca's stream on 127.0.0.1, the plant runs from the
CLI, and the test subscribes with the streamctl client. The bars equal `streamctl replay` of
the same file across an injected disconnect, and a cancelled trade re-publishes its bar as the
replay of the file without that trade makes it; a kill of the venue gives a reconnect and bars
that carry on; a refused auth fails the feed with Alpaca's reason and the worker runs on.
"""

from __future__ import annotations

import json
import os
import subprocess

import msgspec
import numpy as np
import pytest
from _alpaca import ESU4_TRADES, KEY, SECRET, file_records
from _common import free_port, wait_until
from _data import sample
from plant_helpers import PlantCli, start_venue

from streamctl.client import Subscriber
from streamctl.ingest.vendors.alpaca.venue.stream import load_stream

pytestmark = pytest.mark.timeout(300)


def _config(name: str, venue_port: int, pub_port: int) -> str:
    return f"""\
name: {name}
feeds:
  - name: alp
    vendor: alpaca
    symbols: [ESU4]
    options:
      key: ${{APCA_API_KEY_ID}}
      secret: ${{APCA_API_SECRET_KEY}}
      url: ws://127.0.0.1:{venue_port}
      reconnect: {{delays: [0.2, 0.4], max_delay: 0.5, jitter: 0.0, max_failures: 30}}
partitions: {{count: 1}}
calculators:
  bars: {{time: [60s], ticks: [20], close_delay: 0.1}}
publish: {{endpoint: "tcp://127.0.0.1:{pub_port}"}}
"""


def _start_venue(plant: PlantCli, port: int, *args: str) -> subprocess.Popen:
    return start_venue(plant, "alpaca", port, "--data", str(sample(ESU4_TRADES)), "--key", KEY, "--secret", SECRET,
                       *args)


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def _replay_bars(plant: PlantCli, config, data: str) -> list[dict]:
    out = plant.tmp / "replay.jsonl"
    plant.run("replay", data, "--config", str(config), "--out", str(out), check=True, timeout=240)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [r for r in rows if r["topic"].startswith("bar.")]


def _without_trade(plant: PlantCli, position: int) -> str:
    """The sample file as CSV without the trade the venue sends as message `position`."""
    item = load_stream([str(sample(ESU4_TRADES))]).items[position]
    ticks = file_records(ESU4_TRADES)
    drop = int(np.flatnonzero(ticks["ts_event"] == item.ts_event)[0])
    lines = ["ts_event,symbol,price,size"] + [
        f"{ts},ESU4,{p / 1e9!r},{q!r}" for i, (ts, p, q) in
        enumerate(zip(ticks["ts_event"].tolist(), ticks["price"].tolist(), ticks["size"].tolist(), strict=True))
        if i != drop]
    path = plant.tmp / "cancelled.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _key(bar: dict) -> tuple[str, int]:
    return bar["topic"], bar["ts_start"]


def _comparable(bar: dict) -> dict:
    """A bar without what differs between a live run and a replay (receive time, sequence, source)."""
    return {k: v for k, v in bar.items() if k not in ("ts_recv", "seq", "src", "topic", "revision")}


def test_alpaca_feed_through_the_plant_equals_replay_reconnects_and_fails_on_refused_auth(plant):
    name = f"alp{os.getpid() % 100000}"
    venue_port, pub_port = free_port(), free_port()
    plant.env.update(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET)
    config = plant.write_config(name, _config(name, venue_port, pub_port))
    reference = _replay_bars(plant, config, str(sample(ESU4_TRADES)))
    cancelled = {_key(b): b for b in _replay_bars(plant, config, _without_trade(plant, 10))}
    assert len(reference) >= 8  # the file's 120 trades make whole 20-trade bars: the replay flushes none partial
    # The plant starts while the venue is still down: the feed retries on its schedule.
    plant.run("up", str(config), "--detach", check=True)
    sub = Subscriber(f"tcp://127.0.0.1:{pub_port}")
    bars, events = [], []
    sub.on_bar(lambda b: bars.append({"topic": f"bar.{b.interval}.{b.symbol}", **msgspec.structs.asdict(b)}))
    sub.on_event(events.append)
    sub.subscribe("bar.60s.ESU4", "bar.20t.ESU4", "event.alp")

    def pump_until(condition, timeout: float, what: str) -> None:
        wait_until(lambda: sub.poll(0.1) >= 0 and condition(), timeout, what, interval=0)

    def kinds(kind: str) -> int:
        return sum(1 for e in events if e.kind == kind)

    venue = None
    try:
        pump_until(lambda: kinds("reconnect_failed") > 0, 30, "the feed's first retry event")
        venue = _start_venue(plant, venue_port, "--inject", "disconnect@60", "--inject", "cancel:10@70")
        pump_until(lambda: len(bars) >= len(reference) + 1, 60, "the replay's bars and one revision")
        first = sorted((b for b in bars if not b["revision"]), key=_key)
        assert [_comparable(b) for b in first] == [_comparable(b) for b in sorted(reference, key=_key)]
        # the cancel of trade message 10 re-publishes its 60 s bar as the file without that trade makes it
        revised = [b for b in bars if b["revision"]]
        assert len(revised) == 1 and revised[0]["revision"] == 1 and revised[0]["topic"] == "bar.60s.ESU4"
        assert _comparable(revised[0]) == _comparable(cancelled[_key(revised[0])])
        # connected after the retries, then the injected disconnect, and back
        assert kinds("disconnect") == 1 and kinds("reconnect") == 2 and kinds("connected") == 2
        assert plant.process(name, "alp")["state"] == "ready"

        _stop(venue)  # the venue dies ...
        pump_until(lambda: kinds("disconnect") == 2, 30, "a disconnect event")
        seen = len(bars)
        venue = _start_venue(plant, venue_port, "--loop")  # ... and comes back on the same port
        pump_until(lambda: kinds("reconnect") == 3 and len(bars) > seen + 4, 60, "bars after the reconnect")
        assert {b["topic"] for b in bars[seen:]} == {"bar.20t.ESU4"}  # tick bars carry on (the loop's times are old)
        assert plant.process(name, "alp")["reconnects"] >= 3

        _stop(venue)  # back once more, refusing our keys: retrying cannot help
        venue = _start_venue(plant, venue_port, "--auth-error", "402")
        wait_until(lambda: plant.process(name, "alp")["state"] == "failed", 60, "the feed to fail")
        assert "402 `auth failed`: the key or secret is wrong" in plant.process(name, "alp")["detail"]
        pump_until(lambda: any(e.kind == "error" and e.code == 402 for e in events), 10, "the error event")
        assert plant.process(name, "worker-0")["state"] == "ready"  # the rest of the plant runs on
    finally:
        sub.close()
        if venue is not None:
            _stop(venue)
