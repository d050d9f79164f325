"""A Databento feed against hostile gateways, through the whole plant (`streamctl up --detach`).

Issue 8, defect 7: a gateway that never completes the control phase, or that authenticates
and then sends nothing, ends in FAILED after `max_failures` attempts, the feed shows
`reconnecting` meanwhile, it is never killed for a stale heartbeat, a kill -9 mid-attempt does
not reset the count, and the rest of the plant keeps running. Defect 10: escape sequences in a
gateway's text never reach logs or `status` raw, and a failed `up --detach` shows only its own
part of the plant's log.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from _common import free_port, wait_until
from _databento import KEY, HostileGateway, plant_yaml

pytestmark = pytest.mark.timeout(240)


def _config(plant, name: str, gateway_port: int, *, options: str, supervision: str = "") -> str:
    plant.env["DATABENTO_API_KEY"] = KEY
    return str(plant.write_config(name, plant_yaml(name, gateway_port, free_port(), options=options, extra=supervision)))


def _name(tag: str) -> str:
    return f"{tag}{os.getpid() % 100000}"


def _watch_states(plant, name: str, seen: list[str], until) -> dict:
    """Poll `status` until `until(feed)` holds, recording every state and detail the feed shows."""

    def check():
        feed = plant.process(name, "glbx")
        seen.append(f"{feed['state']}: {feed['detail']}")
        return feed if until(feed) else None

    return wait_until(check, 90, "the feed's state", interval=0.2)


def test_a_silent_gateway_fails_the_feed_after_max_attempts_even_across_a_kill(plant):
    # Connect timeout 3 s > heartbeat timeout 2 s: only the feed's heartbeat while it waits for the
    # gateway keeps the supervisor from killing it mid-attempt.
    name = _name("silent")
    with HostileGateway("silent") as gateway:
        config = _config(plant, name, gateway.port, options="""\
      connect_timeout_s: 3
      reconnect: {delays: [0.2], max_delay: 0.2, jitter: 0.0, max_failures: 3}""",
                         supervision="supervision: {heartbeat_timeout: 2}")
        plant.run("up", config, "--detach", check=True)  # a feed that cannot connect yet does not stop the plant
        seen: list[str] = []
        _watch_states(plant, name, seen, lambda f: f["state"] == "reconnecting")
        wait_until(lambda: gateway.connections >= 2, 30, "attempt 1's connection")  # attempt 1 is mid-control-phase
        os.kill(plant.process(name, "glbx")["pid"], signal.SIGKILL)
        final = _watch_states(plant, name, seen, lambda f: f["state"] == "failed")
        assert "gave up after 3 failed attempts" in final["detail"], final
        assert final["restarts"] == 1  # our kill only: never killed for a stale heartbeat
        # The kill did not reset the count: the first session, attempts 1 (killed), 2 and 3.
        assert gateway.connections == 4
        attempts = [int(n) for s in seen for n in re.findall(r"\(attempt (\d) of 3\)", s)]
        assert attempts and attempts == sorted(attempts), seen  # never back to attempt 1
        assert any(s.startswith("reconnecting: retrying in") for s in seen), seen
        status = plant.status(name)
        for process in ("hub", "worker-0"):
            assert next(p for p in status["processes"] if p["name"] == process)["state"] == "ready"


def test_a_gateway_that_authenticates_then_sends_nothing_fails_the_feed(plant):
    name = _name("mute")
    with HostileGateway("auth_then_silent") as gateway:
        config = _config(plant, name, gateway.port, options="""\
      heartbeat_interval_s: 1
      liveness_timeout_s: 4
      reconnect: {delays: [0.2], max_delay: 0.2, jitter: 0.0, max_failures: 2}""")
        plant.run("up", config, "--detach", check=True)
        seen: list[str] = []
        final = _watch_states(plant, name, seen, lambda f: f["state"] == "failed")
        assert "gave up after 2 failed attempts; last error: no data or heartbeat" in final["detail"], final
        assert final["restarts"] == 0 and gateway.connections == 3  # the first session, then attempts 1 and 2
        # Connected again but no record yet: still reconnecting, never `ready` in between.
        assert any(s.startswith("reconnecting: reconnected on attempt") for s in seen), seen
        states = [s.split(":")[0] for s in seen]
        assert "ready" not in states[states.index("reconnecting"):], seen
        status = plant.status(name)
        assert next(p for p in status["processes"] if p["name"] == "worker-0")["state"] == "ready"


def test_escape_sequences_from_a_gateway_never_reach_logs_or_status_raw(plant):
    name = _name("esc")
    hostile = "\x1b]0;owned\x07\x1b[2J\x1b[31mrefused\x1b[0m"
    with HostileGateway("refuse", error=hostile) as gateway:
        config = _config(plant, name, gateway.port, options="")
        result = plant.run("up", config, "--detach")
    assert result.returncode != 0
    log = (plant.run_dir / f"{name}.log").read_text()
    for text in (result.stdout, result.stderr, log):
        assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mrefused\\x1b[0m" in result.stderr  # escaped, still readable
    assert "refused authentication: \\x1b]0;owned" in log


def test_a_failed_detached_up_shows_only_its_own_part_of_the_log(plant):
    name = _name("logs")
    outputs = []
    for error in ("first-run-refusal", "second-run-refusal"):
        with HostileGateway("refuse", error=error) as gateway:
            config = _config(plant, name, gateway.port, options="")
            outputs.append(plant.run("up", config, "--detach"))
    first, second = outputs
    assert first.returncode != 0 and second.returncode != 0
    log = (plant.run_dir / f"{name}.log").read_text()
    assert "first-run-refusal" in log and "second-run-refusal" in log  # the log keeps both runs ...
    assert "second-run-refusal" in second.stderr
    assert "first-run-refusal" not in second.stderr  # ... each failure shows only its own
