"""The plant as a user meets it: `streamctl up/tail/status/down/clean` on real processes.

Every test runs the real command line in subprocesses (supervisor, hub, workers, feed),
with an isolated run directory and a free port, and cleans up even when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
from _common import free_port, wait_until
from plant_helpers import PlantCli, demo_config, kill_plant_processes, our_segments

pytestmark = pytest.mark.timeout(240)


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}"


def _up_demo(plant: PlantCli, prefix: str, **options) -> tuple[str, Path]:
    """Start a demo plant detached (a fresh name and port); its name and config path."""
    name = _unique(prefix)
    config = plant.write_config(name, demo_config(name, free_port(), **options))
    plant.run("up", str(config), "--detach", check=True)
    return name, config


def _bars_equal_their_trades(rows: list[dict]) -> int:
    """Check each 1 s bar fully covered by the received trades; return how many were checked."""
    trades = [r for r in rows if r["topic"] == "trade.AAPL"]
    bars = [r for r in rows if r["topic"] == "bar.1s.AAPL"]
    assert trades, "no trades received"
    first_trade = min(t["ts_event"] for t in trades)
    last_trade = max(t["ts_event"] for t in trades)
    checked = 0
    for bar in bars:
        if bar["ts_start"] <= first_trade or bar["ts_end"] > last_trade:
            continue  # the subscription began inside this bar, or its trades are not all in
        inside = [t for t in trades if bar["ts_start"] <= t["ts_event"] < bar["ts_end"]]
        inside.sort(key=lambda t: t["seq"])
        assert inside, f"bar {bar} has no trades received"
        assert bar["open"] == inside[0]["price"]
        assert bar["close"] == inside[-1]["price"]
        assert bar["high"] == max(t["price"] for t in inside)
        assert bar["low"] == min(t["price"] for t in inside)
        assert bar["trades"] == len(inside)
        assert bar["volume"] == sum(t["size"] for t in inside)
        notional = sum(t["price"] * t["size"] for t in inside)
        assert bar["vwap"] == pytest.approx(notional / bar["volume"], rel=1e-12)
        checked += 1
    return checked


def test_up_tail_down_bars_equal_trades_and_nothing_left(plant):
    name, _ = _up_demo(plant, "acc")
    manifest = plant.manifest(name)
    assert manifest["state"] == "ready"
    pids = [p["pid"] for p in plant.status(name)["processes"]] + [manifest["supervisor_pid"]]

    out = plant.run("tail", "--name", name, "trade.AAPL", "bar.1s.AAPL", "--json", "--count", "400",
                    timeout=90, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 400
    assert {r["topic"] for r in rows} == {"trade.AAPL", "bar.1s.AAPL"}
    assert all(r["symbol"] == "AAPL" for r in rows)
    assert _bars_equal_their_trades(rows) >= 1

    status = plant.status(name)
    assert status["supervisor"]["pid"] == manifest["supervisor_pid"]
    roles = defaultdict(list)
    for p in status["processes"]:
        roles[p["role"]].append(p)
        assert {"name", "role", "pid", "restarts", "drops", "ring_fill", "rss", "uss", "cpu_pct"} <= set(p)
    assert len(roles["worker"]) == 2 and len(roles["ingest"]) == 1
    assert roles["ingest"][0]["records_in"] > 0

    # Memory: the supervisor samples RSS and USS together once a second, for every process.
    def uss_sampled() -> dict | None:
        now = plant.status(name)
        return now if all(p["uss"] > 0 for p in now["processes"]) else None

    sampled = wait_until(uss_sampled, 30, "USS to be sampled")
    for p in sampled["processes"]:
        assert 1 << 20 < p["uss"] <= p["rss"], p  # a Python process holds at least a MiB of its own
    header = plant.run("status", "--name", name, check=True).stdout.splitlines()[1].split()
    assert header[header.index("rss") + 1] == "uss"

    plant.run("down", "--name", name, check=True)
    assert plant.manifest(name) is None
    assert our_segments(name) == []
    gone = wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                                      for pid in pids), 10, "every plant process to exit")
    assert gone


@pytest.mark.parametrize("victim", ["worker-0", "sim"])
def test_kill_9_of_a_child_is_restarted_and_bars_keep_coming(plant, victim):
    name, _ = _up_demo(plant, "kil")
    before = plant.process(name, victim)
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    after = wait_until(
        lambda: (p := plant.process(name, victim))["pid"] != before["pid"] and p["state"] == "ready" and p,
        30, f"{victim} to be restarted")
    restart_seconds = time.monotonic() - killed_at
    assert after["restarts"] == before["restarts"] + 1
    assert restart_seconds < 10, restart_seconds  # the acceptance target is 2 s; the benchmark note says more
    # Bars keep coming after the restart, for symbols of both partitions.
    out = plant.run("tail", "--name", name, "bar.1s.", "--json", "--count", "12", "--timeout", "30",
                    timeout=60, check=True)
    bars = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(bars) == 12
    assert len({b["symbol"] for b in bars}) >= 3


def test_kill_9_of_the_whole_plant_then_up_and_down_leaves_nothing(plant):
    name, config = _up_demo(plant, "crash")
    manifest = plant.manifest(name)
    assert our_segments(name)
    kill_plant_processes(manifest)  # SIGKILL to the supervisor and every child at once
    assert our_segments(name), "kill -9 should leave the segments behind (that is what we clean)"
    plant.run("up", str(config), "--detach", check=True)  # sweeps the dead plant's segments first
    plant.run("down", "--name", name, check=True)
    assert our_segments(name) == []
    assert plant.manifest(name) is None
    # `clean` after a crash removes the leftovers without starting anything.
    plant.run("up", str(config), "--detach", check=True)
    kill_plant_processes(plant.manifest(name))
    out = plant.run("clean", "--name", name, check=True)
    assert "removed" in out.stdout
    assert our_segments(name) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("name: {name}\nfeeds:\n  - {{name: a, vendor: no_such_vendor, symbols: [A]}}\n", "`feeds[0].vendor`"),
        ("name: {name}\nfeeds:\n  - {{name: a, vendor: sim, symbols: [A]}}\ncalculators: {{bars: {{time: [0s]}}}}\n",
         "`calculators.bars.time[0]`"),
        ("name: {name}\nfeeds:\n  - {{name: a, vendor: sim}}\n", "`feeds[0].symbols`"),
    ],
    ids=["unknown-vendor", "zero-interval", "missing-symbols"],
)
def test_bad_config_refused_by_validate_and_up(plant, body, field):
    name = _unique("bad")
    config = plant.write_config(name, body.format(name=name))
    for args in (("validate", str(config)), ("up", str(config)), ("up", str(config), "--detach")):
        proc = plant.run(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr
        assert plant.manifest(name) is None and our_segments(name) == []


def test_two_plants_side_by_side_and_duplicate_name_refused(plant):
    a, b = _unique("pa"), _unique("pb")
    ca = plant.write_config(a, demo_config(a, free_port(), rate=50, partitions=1))
    cb = plant.write_config(b, demo_config(b, free_port(), rate=50, partitions=1))
    plant.run("up", str(ca), "--detach", check=True)
    plant.run("up", str(cb), "--detach", check=True)
    again = plant.run("up", str(ca), "--detach")
    assert again.returncode != 0 and "already running" in again.stderr
    assert plant.status(a)["plant"] == a and plant.status(b)["plant"] == b
    plant.run("down", "--name", a, check=True)
    assert plant.status(b)["plant"] == b
    plant.run("down", "--name", b, check=True)
    assert our_segments(a) == [] and our_segments(b) == []


def test_foreground_up_with_duration_stops_cleanly(plant):
    name = _unique("fg")
    config = plant.write_config(name, demo_config(name, free_port(), rate=50, partitions=1))
    proc = plant.run("up", str(config), "--duration", "3", "--no-view", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stderr
    assert our_segments(name) == [] and plant.manifest(name) is None


def test_stalled_worker_is_restarted_and_overflow_is_counted(plant):
    """SIGSTOP a worker: its ring fills and overflows (counted), the supervisor notices the
    silent heartbeat, kills and restarts it, and the plant carries on."""
    name = _unique("stall")
    extra = "supervision: {heartbeat_timeout: 2.0}\n"
    text = demo_config(name, free_port(), rate=2000, partitions=1, extra=extra).replace(
        "rings: {capacity: 16384}", "rings: {capacity: 1024}")
    config = plant.write_config(name, text)
    plant.run("up", str(config), "--detach", check=True)
    before = plant.process(name, "worker-0")
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        overflowing = wait_until(lambda: (p := plant.process(name, "sim"))["drops"]["overflow"] > 0 and p, 30,
                                 "ring overflow to be counted")
        assert overflowing["ring_fill"] == 1.0
        after = wait_until(
            lambda: (p := plant.process(name, "worker-0"))["pid"] != before["pid"] and p["state"] == "ready" and p,
            30, "the stalled worker to be replaced")
    finally:
        try:
            os.kill(before["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert after["restarts"] == 1
    wait_until(lambda: plant.process(name, "sim")["ring_fill"] < 1.0, 30, "the new worker to drain the ring")

    def agree() -> bool:
        """The ring's own drop count and the feed's overflow counter agree (the ring counts inside
        `publish`, the feed after it returns: a status read can fall between the two)."""
        status = plant.status(name)
        feed = next(p for p in status["processes"] if p["name"] == "sim")
        return status["rings"][0]["dropped"] == feed["drops"]["overflow"] > 0

    wait_until(agree, 10, "the ring and the feed to agree on the drops")


def test_a_child_that_keeps_dying_is_marked_failed_with_the_reason(plant):
    extra = "supervision: {max_restarts: 3, restart_window: 60, first_restart_delay: 0.1}\n"
    name, _ = _up_demo(plant, "loop", rate=50, partitions=2, extra=extra)
    for death in range(3):
        victim = wait_until(lambda: (p := plant.process(name, "worker-1"))["state"] == "ready" and p, 30,
                            "worker-1 to be ready")
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda v=victim: plant.process(name, "worker-1")["pid"] != v["pid"]
                   or plant.process(name, "worker-1")["state"] == "failed", 30, f"death {death + 1} to be seen")
    failed = wait_until(lambda: (p := plant.process(name, "worker-1"))["state"] == "failed" and p, 30,
                        "worker-1 to be marked failed")
    assert "died 3 times" in failed["detail"] and "SIGKILL" in failed["detail"]
    assert failed["restarts"] == 2
    assert plant.process(name, "worker-0")["state"] == "ready"  # the rest carries on
    assert plant.process(name, "sim")["state"] == "ready"
