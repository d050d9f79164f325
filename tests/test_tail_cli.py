"""`streamctl tail` on bad input: one clear line, never a traceback, never silence (issue 8, defect 10)."""

from __future__ import annotations

import pytest
from _common import free_port
from plant_helpers import PlantCli

pytestmark = pytest.mark.timeout(120)


def _error_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["trade.ÄPFEL"], "ASCII"),
    (["bar.60s.*", "quote.€"], "ASCII"),
    (["foo.AAPL"], "unknown kind `foo`; known kinds: anomaly, bar, book"),
    (["tarde."], "unknown kind `tarde`"),
    (["x*"], "unknown kind `x`"),
    (["bar.AAPL"], "does not follow `kind.[param.]NAME`"),
], ids=["non-ascii", "non-ascii-second", "unknown-kind", "unknown-kind-prefix", "unknown-kind-star", "no-param"])
def test_a_pattern_that_matches_no_topic_is_refused_in_one_line(plant: PlantCli, args, expected):
    out = plant.run("tail", *args, "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "30", timeout=60)
    line = _error_line(out)
    assert out.returncode == 2
    assert expected in line


@pytest.mark.parametrize("endpoint", ["garbage", "tcp://", "tcp://127.0.0.1:notaport", "udp://x:1"])
def test_a_garbage_endpoint_is_refused_in_one_line(plant: PlantCli, endpoint):
    out = plant.run("tail", "trade.AAPL", "--endpoint", endpoint, "--timeout", "30", timeout=60)
    line = _error_line(out)
    assert out.returncode == 2
    assert endpoint in line


def test_nothing_listening_says_waiting_once_and_honours_timeout(plant: PlantCli):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = plant.run("tail", "trade.AAPL", "--endpoint", endpoint, "--timeout", "2", timeout=60)
    assert out.stderr.count(f"waiting for {endpoint} ...") == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"error: nothing answered at {endpoint} within 2 s"
    assert out.returncode == 1
    assert out.stdout == ""


def test_curve_keys_go_together(plant: PlantCli, tmp_path):
    out = plant.run("tail", "trade.AAPL", "--endpoint", "tcp://127.0.0.1:1", "--curve-client-key",
                    str(tmp_path / "x.key_secret"), timeout=60)
    assert "`--curve-server-key` and `--curve-client-key` go together" in _error_line(out)
    assert out.returncode == 2
