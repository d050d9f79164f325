"""Only the plant publishes into its hub; CURVE on the public endpoint lets in only allowed keys.

Issue 8, defect 5: a process of the same user connected a PUB to the hub's internal endpoint
and its forged `bar.60s.AAPL` (with ``src=worker-0``) reached subscribers as real. Every check
here runs against real sockets: a forger that would get through is seen within a few status
messages (the slow joiner takes ~0.2 s), and those messages prove the path is live.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from _common import free_port, wait_until
from _pubsub import probe
from plant_helpers import PlantCli, demo_config

from streamctl.bus import wire
from streamctl.bus.curve import load_client, plant_keys
from streamctl.bus.proxy import Proxy
from streamctl.bus.publisher import Publisher
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(240)

_FORGED_OPEN = 4242.0
"""The `open` of every forged bar: no simulated price is anywhere near it."""


def _forged_bar() -> tuple[bytes, bytes]:
    bar = wire.Bar(symbol="AAPL", interval="60s", ts_start=0, ts_end=60_000_000_000, open=_FORGED_OPEN,
                   high=_FORGED_OPEN, low=_FORGED_OPEN, close=_FORGED_OPEN, volume=1.0, trades=1,
                   vwap=_FORGED_OPEN, ts_event=1, ts_recv=1, seq=1, src="worker-0")
    return wire.topic_frame("bar.60s.AAPL"), msgspec.msgpack.encode(bar)


def _forger(ctx: zmq.Context, endpoint: str, keys=None) -> zmq.Socket:
    sock = ctx.socket(zmq.PUB)
    sock.linger = 0
    if keys is not None:
        keys.apply(sock)
    sock.connect(endpoint)
    return sock


def test_the_hub_lets_in_only_the_plant_client_key(tmp_path, cleanup):
    """Proxy level: the plant's publisher gets through; no key, and a stranger's key with the
    right server key, do not (the latter is counted as refused)."""
    server, client = plant_keys()
    proxy = Proxy(frontend=f"ipc://{tmp_path}/in.ipc", backend="tcp://127.0.0.1:*", sndhwm=1000,
                  frontend_curve=server)
    ctx = zmq.Context()
    proxy.start()
    try:
        frontend, backend = proxy.frontend_endpoint or "", proxy.backend_endpoint or ""
        stranger_public, stranger_secret = zmq.curve_keypair()
        stranger = msgspec.structs.replace(client, public_key=stranger_public, secret_key=stranger_secret)
        forgers = [_forger(ctx, frontend), _forger(ctx, frontend, stranger)]
        sub = Subscriber(backend)
        cleanup.append(sub)
        pub = Publisher(frontend, src="worker-0", curve=client)
        cleanup.append(pub)
        forged, probes = [], []
        sub.on_bar(lambda bar: forged.append(bar) if bar.open == _FORGED_OPEN else None)
        sub.on_event(probes.append)
        sub.subscribe("bar.60s.AAPL", "event.")

        def step() -> None:
            for sock in forgers:
                sock.send_multipart(_forged_bar())
            pub.publish(*probe("worker-0"))
            sub.poll(0.02)

        def refused() -> int:
            stats = proxy.stats()
            return 0 if stats is None else stats.refused

        wait_until(lambda: refused() >= 1, 30, "the stranger's key to be refused", step)
        seen = len(probes)
        wait_until(lambda: len(probes) >= seen + 20, 30, "20 more probes from the plant's publisher", step)
        assert forged == []
    finally:
        ctx.destroy(0)
        proxy.stop()


def _demo_plant(plant: PlantCli, prefix: str, extra: str = "") -> tuple[str, int]:
    name, port = f"{prefix}{os.getpid() % 100000}", free_port()
    config = plant.write_config(name, demo_config(name, port, partitions=1, extra=extra))
    plant.run("up", str(config), "--detach", check=True)
    return name, port


def test_a_forged_publisher_on_the_internal_endpoint_reaches_no_subscriber(plant):
    name, port = _demo_plant(plant, "forge")
    internal = plant.manifest(name)["internal"]
    ctx = zmq.Context()
    try:
        forger = _forger(ctx, internal)
        with Subscriber(f"tcp://127.0.0.1:{port}") as sub:
            forged, statuses = [], []
            sub.on_bar(lambda bar: forged.append(bar) if bar.open == _FORGED_OPEN else None)
            sub.on_status(statuses.append)
            sub.subscribe("bar.60s.AAPL", "status.hub")

            def step() -> None:
                forger.send_multipart(_forged_bar())
                sub.poll(0.02)

            # status.hub comes once a second: 3 of them span well over the slow joiner's delay.
            wait_until(lambda: len(statuses) >= 3, 60, "three status.hub messages", step)
            assert forged == [], f"a forged bar was delivered: {forged[0]}"
    finally:
        ctx.destroy(0)


def _keys(plant: PlantCli, name: str, directory: Path) -> None:
    plant.run("keys", name, "--dir", str(directory), check=True)


def test_keys_makes_a_public_file_and_a_private_secret_file(plant, tmp_path):
    _keys(plant, "alice", tmp_path / "k")
    assert (tmp_path / "k" / "alice.key").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "k" / "alice.key_secret").stat().st_mode & 0o777 == 0o600
    again = plant.run("keys", "alice", "--dir", str(tmp_path / "k"))
    assert again.returncode == 2 and "exists" in again.stderr


def test_publish_curve_with_a_missing_key_file_is_refused_naming_the_field(plant, tmp_path):
    config = plant.write_config("badcurve", demo_config("badcurve", 5599).replace(
        'raw_quotes: true}', f'raw_quotes: true, curve: {{server_secret_key: "{tmp_path}/none.key_secret", '
                             f'client_public_keys: "{tmp_path}"}}}}'))
    out = plant.run("validate", str(config))
    assert out.returncode == 2
    assert "`publish.curve.server_secret_key`" in out.stderr and "none.key_secret" in out.stderr
    assert "Traceback" not in out.stderr


def test_curve_on_the_public_endpoint_lets_in_only_allowed_subscribers(plant, tmp_path):
    keys = tmp_path / "keys"
    for who in ("plant", "alice", "mallory"):
        _keys(plant, who, keys / who)
    allowed = keys / "allowed"
    allowed.mkdir()
    shutil.copy(keys / "alice" / "alice.key", allowed)
    name, port = f"curve{os.getpid() % 100000}", free_port()
    text = demo_config(name, port, partitions=1).replace(
        'raw_quotes: true}', f'raw_quotes: true, curve: {{server_secret_key: "{keys}/plant/plant.key_secret", '
                             f'client_public_keys: "{allowed}"}}}}')
    plant.run("up", str(plant.write_config(name, text)), "--detach", check=True)

    def tail(who: str | None, *args: str) -> subprocess.Popen:
        curve = [] if who is None else ["--curve-server-key", str(keys / "plant" / "plant.key"),
                                        "--curve-client-key", str(keys / who / f"{who}.key_secret")]
        return subprocess.Popen([sys.executable, "-m", "streamctl.cli", "tail", "status.", "--json",
                                 "--endpoint", f"tcp://127.0.0.1:{port}", *curve, *args], env=plant.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The outsiders listen longer than alice needs for her messages (status comes every second).
    outsiders = [tail("mallory", "--timeout", "15"), tail(None, "--timeout", "15")]
    try:
        started = time.monotonic()
        alice = tail("alice", "--count", "3", "--timeout", "60")
        out, err = alice.communicate(timeout=90)
        assert alice.returncode == 0, err
        assert len(out.splitlines()) == 3
        assert time.monotonic() - started < 15, "alice was too slow for the outsiders' window to mean anything"
        for proc in outsiders:
            out, err = proc.communicate(timeout=60)
            assert out == "", f"an unauthorized subscriber received: {out[:200]}"
    finally:
        for proc in outsiders:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    # The hub counted mallory's refused handshakes (it reads its proxy's counters every 50 ms).
    wait_until(lambda: plant.process(name, "hub")["errors"] >= 1, 30, "the hub to count a refused key")


def test_load_client_names_a_bad_key_file(tmp_path):
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(ValueError, match="junk.key"):
        load_client(tmp_path / "junk.key", tmp_path / "junk.key")
