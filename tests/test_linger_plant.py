"""`partitions.linger_ms`: a live worker lets records gather after a batch, so it sends fewer,
larger messages (each hand-over between processes wakes a sleeping thread, the CPU cost at live
rates), and loses nothing on the way."""

from __future__ import annotations

import os
import statistics

import msgpack
import pytest
import zmq
from _common import free_port, wait_until

from streamctl.cli.config import ConfigError, parse_config

pytestmark = pytest.mark.timeout(300)


def _config(name: str, port: int, linger_ms: float, journal: str) -> str:
    return f"""\
name: {name}
feeds:
  - {{name: sim, vendor: sim, symbols: [AAPL, MSFT], options: {{rate: 1000, trade_share: 1.0, quote_share: 0.0, seed: 3}}}}
partitions: {{count: 1, linger_ms: {linger_ms}}}
calculators: {{bars: {{time: [1s]}}}}
journal: {{dir: "{journal}"}}
publish: {{endpoint: "tcp://127.0.0.1:{port}", raw_trades: true, raw_quotes: false}}
"""


def _trades_per_message(plant, tmp_path, linger_ms: float, messages: int = 60) -> tuple[list[int], dict[str, list[int]]]:
    """Start a plant, read `messages` raw trade messages; their sizes and each topic's seqs."""
    name = f"lg{int(linger_ms)}x{os.getpid() % 100000}"
    port = free_port()
    config = plant.write_config(name, _config(name, port, linger_ms, str(tmp_path / f"data-{name}")))
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"trade.")
    sub.connect(f"tcp://127.0.0.1:{port}")
    sizes: list[int] = []
    seqs: dict[str, list[int]] = {}
    try:
        plant.run("up", str(config), "--detach", check=True)

        def read() -> bool:
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                trades = msgpack.unpackb(payload)
                sizes.append(len(trades))
                seqs.setdefault(topic.decode(), []).extend(t["seq"] for t in trades)
            return len(sizes) >= messages

        wait_until(read, 120, f"{messages} raw trade messages")
        restarts = plant.process(name, "worker-0")["restarts"]
        plant.run("down", "--name", name, check=True)
    finally:
        sub.close(0)
        context.term()
    assert restarts == 0, "the worker crashed while lingering"
    return sizes, seqs


def test_a_lingering_worker_sends_fewer_larger_messages_and_loses_nothing(plant, tmp_path):
    """1,000 trades/s per symbol, handed over by the simulator every millisecond: without lingering
    a message carries the one or two trades of one hand-over; with 40 ms it carries the ~40 that
    gathered (a loaded machine only makes batches larger, never smaller)."""
    sizes, seqs = _trades_per_message(plant, tmp_path, linger_ms=40)
    assert statistics.median(sizes[1:]) >= 20, sizes  # the first may be the lone record after a quiet spell
    for topic, numbers in seqs.items():
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"{topic}: a gap or a repeat"


def test_linger_is_bounded_and_named_when_refused():
    with pytest.raises(ConfigError, match=r"partitions\.linger_ms"):
        parse_config("name: x\nfeeds: [{name: sim, vendor: sim, symbols: [A]}]\npartitions: {linger_ms: 500}\n")
    assert parse_config("name: x\nfeeds: [{name: sim, vendor: sim, symbols: [A]}]\npartitions: {linger_ms: 2.5}\n"
                        ).partitions.linger_ms == 2.5
