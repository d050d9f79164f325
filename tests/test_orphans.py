"""When the supervisor dies: its children follow it, and `clean` never pulls memory from under
a live process nor leaves a dead plant's sockets behind.

Real plants through the real command line (`up --detach`, `kill -9`, `clean`, `down`); every
wait is bounded, and every process a test started is killed at the end even when it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from _common import free_port, wait_until
from plant_helpers import PlantCli, demo_config, our_segments

pytestmark = pytest.mark.timeout(240)


def _up(plant: PlantCli, prefix: str) -> tuple[str, Path]:
    name = f"{prefix}{os.getpid() % 100000}"
    config = plant.write_config(name, demo_config(name, free_port(), rate=5))
    plant.run("up", str(config), "--detach", check=True)
    return name, config


@contextmanager
def _descendants_of_supervisor(plant: PlantCli, name: str) -> Iterator[tuple[psutil.Process, list[psutil.Process]]]:
    """The supervisor and every process under it (forkserver, hub, workers, feed), all SIGKILLed
    at the end whatever happened, so a failing test leaves no orphaned plant behind."""
    supervisor = psutil.Process(plant.manifest(name)["supervisor_pid"])
    children = supervisor.children(recursive=True)
    try:
        yield supervisor, children
    finally:
        for proc in [supervisor, *children]:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs([supervisor, *children], timeout=10)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_kill_9_of_the_supervisor_takes_every_child_down_and_up_starts_clean(plant):
    name, config = _up(plant, "orph")
    with _descendants_of_supervisor(plant, name) as (supervisor, children):
        plant_pids = {p["pid"] for p in plant.status(name)["processes"]}
        assert plant_pids <= {c.pid for c in children}  # hub, workers and feed are under it
        supervisor.kill()
        supervisor.wait(10)
        wait_until(lambda: not _alive(children), 30, "every child of the killed supervisor to exit")
        # The segments and the manifest are left for the next `up` (or `clean`) to sweep.
        plant.run("up", str(config), "--detach", check=True)
        assert plant.manifest(name)["supervisor_pid"] != supervisor.pid
        plant.run("down", "--name", name, check=True)
    assert our_segments(name) == []
    assert plant.manifest(name) is None
    assert sorted(p.name for p in plant.run_dir.iterdir() if not p.name.endswith(".log")) == []


def test_clean_refuses_to_unlink_what_orphaned_children_still_use(plant):
    name, _ = _up(plant, "orphc")
    with _descendants_of_supervisor(plant, name) as (supervisor, children):
        plant_procs = [psutil.Process(p["pid"]) for p in plant.status(name)["processes"]]
        segments = our_segments(name)
        for proc in plant_procs:  # frozen, so they outlive their supervisor while we look
            proc.suspend()
        supervisor.kill()
        supervisor.wait(10)
        out = plant.run("clean", "--name", name)
        assert out.returncode == 1, out
        assert "kept /dev/shm/stc_" in out.stderr and str(plant_procs[0].pid) in out.stderr
        assert our_segments(name) == segments
        assert plant.manifest(name) is not None
        assert (plant.run_dir / f"{name}.pub").exists()  # the live hub listens on it
        for proc in plant_procs:
            proc.resume()
        wait_until(lambda: not _alive(children), 30, "the orphaned children to exit once thawed")
        out = plant.run("clean", "--name", name, check=True)
    assert our_segments(name) == []
    assert plant.manifest(name) is None
    assert not (plant.run_dir / f"{name}.pub").exists()


def _socket_file(path: Path, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    if listen:
        sock.listen(1)
    return sock


def test_clean_removes_sockets_of_dead_replays_and_plants_only(plant):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [plant.run_dir / f"replay-{int(dead.stdout)}.out", plant.run_dir / "ghost.pub"]
    live = plant.run_dir / f"replay-{os.getpid()}.out"
    socks = [_socket_file(path, listen=False) for path in stale] + [_socket_file(live, listen=True)]
    try:
        for sock in socks[: len(stale)]:
            sock.close()  # its owner is gone: the file stays, nobody listens
        out = plant.run("clean", check=True)
        for path in stale:
            assert f"removed {path}" in out.stdout
            assert not path.exists()
        assert live.exists(), "a socket someone listens on is not stale"
    finally:
        for sock in socks:
            sock.close()
