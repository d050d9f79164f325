"""Progress on the command line: `streamctl replay` draws a bar with records/s and ETA on a terminal
(a real pty) and stays line-oriented in a pipe; `up` says what it waits for while starting."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from _common import free_port
from _data import sample
from plant_helpers import PlantCli, demo_config

from streamctl.cli.progress import ReplayProgress, format_eta

pytestmark = pytest.mark.timeout(300)

TRADES = sample("nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")


@pytest.mark.parametrize(("fraction", "elapsed", "eta"), [(0.25, 10.0, "ETA 0:30"), (0.5, 3600.0, "ETA 1:00:00"),
                                                          (0.0, 5.0, "ETA ?"), (1.0, 7.0, "ETA 0:00")])
def test_bar_text_has_fraction_rate_and_eta(fraction, elapsed, eta):
    text = ReplayProgress.text(fraction, 1_234_567, 830_000.0, elapsed)
    assert text.startswith("[" + "#" * int(fraction * 30)) and f"{fraction * 100:3.0f}%" in text
    assert "1.2M records" in text and "830.0k rec/s" in text and text.endswith(eta)


def test_format_eta():
    assert [format_eta(s) for s in (0, 59.6, 61, 3725)] == ["0:00", "1:00", "1:01", "1:02:05"]


def _replay_on_a_terminal(tmp_path) -> str:
    """Run `streamctl replay` with stderr on a pseudo-terminal; everything it wrote there."""
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    master, slave = pty.openpty()
    with subprocess.Popen([sys.executable, "-m", "streamctl.cli", "replay", str(TRADES)], env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave) as child:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        child.wait(240)
    os.close(master)
    assert child.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_replay_draws_a_progress_bar_on_a_terminal(tmp_path):
    out = _replay_on_a_terminal(tmp_path)
    bars = [part for part in out.split("\r") if part.startswith("\x1b[2K[")]
    assert bars, out
    last = bars[-1]
    assert "[" + "#" * 30 + "] 100%" in last and "rec/s" in last and "ETA 0:00" in last, last


def test_replay_stays_line_oriented_in_a_pipe(tmp_path):
    env = dict(os.environ, STREAMCTL_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-m", "streamctl.cli", "replay", str(TRADES)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr and "replayed" in proc.stderr


def test_up_says_what_it_waits_for(tmp_path):
    cli = PlantCli(tmp_path)
    name = f"prg{os.getpid() % 100000}"
    config = cli.write_config(name, demo_config(name, free_port()))
    try:
        master, slave = pty.openpty()
        with subprocess.Popen([sys.executable, "-m", "streamctl.cli", "up", str(config), "--no-view",
                               "--duration", "0.5"], env=cli.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=slave) as child:
            os.close(slave)
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            child.wait(120)
        os.close(master)
    finally:
        cli.cleanup()
    out = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, out
    assert f"\r\x1b[2Kstarting plant {name}: waiting for " in out, out
    assert f"plant {name} ready" in out
