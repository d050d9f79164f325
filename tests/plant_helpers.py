"""Helpers for tests that run whole plants through the real `streamctl` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml
from _common import wait_until


def demo_config(name: str, port: int, *, rate: int = 300, partitions: int = 2, extra: str = "") -> str:
    return f"""\
name: {name}
feeds:
  - name: sim
    vendor: sim
    symbols: [AAPL, MSFT, GOOGL, AMZN, NVDA]
    options: {{rate: {rate}, seed: 7}}
partitions: {{count: {partitions}}}
calculators:
  bars: {{time: [1s, 60s], ticks: [100], close_delay: 0.1}}
  vwap: {{rolling_window: 50}}
  ema: [12]
  anomalies: {{zscore: {{window: 50, threshold: 6.0}}, jump_pct: 5.0}}
publish: {{endpoint: "tcp://127.0.0.1:{port}", raw_trades: true, raw_quotes: true}}
rings: {{capacity: 16384}}
{extra}"""


def start_venue(plant: PlantCli, vendor: str, port: int, *args: str) -> subprocess.Popen:
    """``streamctl venue VENDOR --port PORT ARGS...`` as a process, once it says it is listening."""
    proc = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "venue", vendor, "--port", str(port), *args],
                            env=plant.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT ..."
    assert "listening" in line, line
    return proc


class PlantCli:
    """Runs `streamctl` commands with an isolated run directory, and cleans up after itself."""

    def __init__(self, tmp_path: Path):
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.env = dict(os.environ, STREAMCTL_RUN_DIR=str(self.run_dir), PYTHONUNBUFFERED="1")
        self.tmp = tmp_path
        self.names: set[str] = set()

    def write_config(self, name: str, text: str) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        self.names.add(name)
        return path

    def replay_config(self, name: str, base: Path, file: Path, *, speed: int, port: int) -> Path:
        """`base` (e.g. `configs/replay.yaml`) as shipped, but one pass over `file` (a second pass
        would go back in time), by absolute path, at `speed`, on a free port."""
        config = yaml.safe_load(base.read_text())
        config["name"] = name
        (feed,) = config["feeds"]
        feed["options"].update(files=[str(file)], speed=speed, loop=False)
        config["publish"]["endpoint"] = f"tcp://127.0.0.1:{port}"
        return self.write_config(name, yaml.safe_dump(config))

    def run(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "streamctl.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"streamctl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def manifest(self, name: str) -> dict | None:
        try:
            return json.loads((self.run_dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def status(self, name: str) -> dict:
        return json.loads(self.run("status", "--name", name, "--json", check=True).stdout)

    def process(self, name: str, process_name: str) -> dict:
        return next(p for p in self.status(name)["processes"] if p["name"] == process_name)

    def settled(self, name: str, worker: str = "worker-0") -> dict:
        """`worker`'s status once it has processed everything its finished feeds wrote.

        An empty ring is not enough (the last batch may still be in the calculators): wait for a
        worker heartbeat newer than the moment the ring was seen empty, as the heartbeat comes from
        the same loop, after the batch.
        """
        wait_until(lambda: self.process(name, worker)["consumer_lag"] == 0, 60, f"{worker} to empty its ring")
        emptied = time.time_ns()

        def later_heartbeat() -> dict | None:
            asked = time.time_ns()
            status = self.process(name, worker)
            age = status["heartbeat_age_s"]
            return status if age is not None and asked - age * 1e9 > emptied else None

        return wait_until(later_heartbeat, 60, f"a {worker} heartbeat after its ring emptied")

    def cleanup(self) -> None:
        """Stop every plant this test started (even after a failure) and remove what is left."""
        for name in self.names:
            manifest = self.manifest(name)
            if manifest and psutil.pid_exists(manifest["supervisor_pid"]):
                self.run("down", "--name", name, "--timeout", "20")
            kill_plant_processes(manifest)
            self.run("clean", "--name", name)
        # Belt and braces: any process started from this test's configs (even one whose
        # manifest was lost) goes too, so a failing test never leaves a plant running.
        strays = [p for p in psutil.process_iter(["cmdline"]) if str(self.tmp) in " ".join(p.info["cmdline"] or [])]
        for proc in strays:
            kill_plant_processes({"supervisor_pid": proc.pid})
        if strays:
            for name in self.names:
                self.run("clean", "--name", name)


def kill_plant_processes(manifest: dict | None) -> None:
    if not manifest:
        return
    try:
        sup = psutil.Process(manifest["supervisor_pid"])
        procs = sup.children(recursive=True) + [sup]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def our_segments(name: str) -> list[str]:
    return sorted(p for p in os.listdir("/dev/shm") if p.startswith(f"stc_{name}_"))
