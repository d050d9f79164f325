"""The supervisor's Prometheus endpoint on a real plant: scraped over HTTP, parsed with the
official text parser, and held against `streamctl status --json` taken around each scrape."""

from __future__ import annotations

import os
import urllib.request

import pytest
from _common import free_port, wait_until
from plant_helpers import PlantCli, demo_config
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def plant(tmp_path):
    cli = PlantCli(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_scraped_counters_agree_with_status_and_move(plant):
    name, port = f"met{os.getpid() % 100000}", free_port()
    config = plant.write_config(name, demo_config(name, free_port(), rate=200,
                                                  extra=f"metrics: {{listen: '127.0.0.1:{port}'}}\n"))
    plant.run("up", str(config), "--detach", check=True)
    wait_until(lambda: plant.process(name, "worker-0")["records_in"] > 0, 60, "worker-0 records")

    before = {p["name"]: p for p in plant.status(name)["processes"]}
    first = _scrape(port)
    after = {p["name"]: p for p in plant.status(name)["processes"]}
    assert set(before) == {"hub", "worker-0", "worker-1", "sim"}
    for proc, was in before.items():
        labels = dict(plant=name, process=proc, role=was["role"])
        for field in ("records_in", "records_out"):
            got = _value(first, f"streamctl_process_{field}_total", **labels)
            assert was[field] <= got <= after[proc][field], (proc, field)
        for cause, n in was["drops"].items():
            assert n <= _value(first, "streamctl_process_drops_total", cause=cause, **labels) <= after[proc]["drops"][cause]
        assert _value(first, "streamctl_process_restarts_total", **labels) == was["restarts"] == 0
        assert _value(first, "streamctl_process_state", state="ready", **labels) == 1.0
        assert _value(first, "streamctl_process_state", state="failed", **labels) == 0.0
        assert _value(first, "streamctl_process_up", **labels) == 1.0
    sim = dict(plant=name, process="sim", role="ingest")
    assert _value(first, "streamctl_feed_reconnects_total", plant=name, feed="sim") == before["sim"]["reconnects"]
    assert _value(first, "streamctl_feed_errors_total", plant=name, feed="sim") == before["sim"]["errors"]
    assert _value(first, "streamctl_feed_duplicates_total", plant=name, feed="sim") == before["sim"]["duplicates"] == 0
    assert 0.0 <= _value(first, "streamctl_process_ring_fill_ratio", **sim) <= 1.0

    # The supervisor samples memory and CPU once a second: wait for a sample of every process.
    wait_until(lambda: all(_value(_scrape(port), "streamctl_process_resident_memory_bytes", plant=name,
                                  process=p, role=r["role"]) > 0 for p, r in before.items()), 30, "memory samples")
    sample = _scrape(port)
    for proc, was in before.items():
        labels = dict(plant=name, process=proc, role=was["role"])
        rss = _value(sample, "streamctl_process_resident_memory_bytes", **labels)
        pss = _value(sample, "streamctl_process_proportional_memory_bytes", **labels)
        uss = _value(sample, "streamctl_process_unique_memory_bytes", **labels)
        assert 0 < uss <= pss <= rss, (proc, uss, pss, rss)

    # The latency histogram counts every record the worker consumed, as records_in does.
    for worker in ("worker-0", "worker-1"):
        count = _value(first, "streamctl_worker_latency_seconds_count", plant=name, process=worker)
        assert before[worker]["records_in"] <= count <= after[worker]["records_in"]
        buckets = sorted(((float(dict(labels)["le"]), v) for (n, labels), v in first.items()
                          if n == "streamctl_worker_latency_seconds_bucket" and dict(labels)["process"] == worker))
        assert buckets[-1] == (float("inf"), count)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False))  # cumulative
        assert _value(first, "streamctl_worker_latency_seconds_sum", plant=name, process=worker) > 0

    # The counters move as the plant runs.
    worker0 = dict(plant=name, process="worker-0", role="worker")
    start = _value(first, "streamctl_process_records_in_total", **worker0)
    wait_until(lambda: _value(_scrape(port), "streamctl_process_records_in_total", **worker0) > start, 30,
               "worker-0 records_in to grow")

    plant.run("down", "--name", name, check=True)
    with pytest.raises(OSError):
        _scrape(port)


def test_a_sinks_rows_backlog_and_lag_are_scraped_as_status_shows_them(plant, tmp_path):
    name, port = f"msk{os.getpid() % 100000}", free_port()
    sink = (f"sinks:\n  - {{name: cache, kind: sqlite, path: \"{tmp_path / 'cache.db'}\", "
            f"topics: [\"bar.1s.\", \"trade.\"], batch_seconds: 0.1}}\n")
    config = plant.write_config(name, demo_config(name, free_port(), rate=200,
                                                  extra=f"metrics: {{listen: '127.0.0.1:{port}'}}\n{sink}"))
    plant.run("up", str(config), "--detach", check=True)
    wait_until(lambda: plant.process(name, "sink-cache")["records_out"] > 0, 60, "the sink to store rows")

    before = plant.process(name, "sink-cache")
    sample = _scrape(port)
    after = plant.process(name, "sink-cache")
    sink = dict(plant=name, sink="sink-cache")
    assert before["records_out"] <= _value(sample, "streamctl_sink_rows_written_total", **sink) <= after["records_out"]
    assert _value(sample, "streamctl_sink_store_errors_total", **sink) == before["errors"] == 0
    assert _value(sample, "streamctl_sink_backlog_rows", **sink) >= 0
    assert 0 <= _value(sample, "streamctl_sink_store_lag_seconds", **sink) < 60
    assert _value(sample, "streamctl_process_state", plant=name, process="sink-cache", role="sink", state="ready") == 1
    written = _value(sample, "streamctl_sink_rows_written_total", **sink)
    wait_until(lambda: _value(_scrape(port), "streamctl_sink_rows_written_total", **sink) > written, 30,
               "the sink's rows written to grow")
    plant.run("down", "--name", name, check=True)


def test_metrics_port_taken_is_refused_naming_the_field(plant):
    import socket

    name = f"mtk{os.getpid() % 100000}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = plant.write_config(name, demo_config(name, free_port(),
                                                      extra=f"metrics: {{listen: '127.0.0.1:{port}'}}\n"))
        proc = plant.run("up", str(config), "--detach")
    assert proc.returncode == 1
    assert f"`metrics.listen` 127.0.0.1:{port}: cannot serve there" in proc.stderr


def test_docs_and_dashboard_name_exactly_the_exported_metrics():
    import json
    import re
    from pathlib import Path

    from streamctl.cli.metrics import families

    docs = Path(__file__).resolve().parents[1] / "docs"
    status = {"plant": "p", "processes": [{
        "name": "worker-0", "role": "worker", "records_in": 1, "records_out": 1, "drops": {"late": 0}, "restarts": 0,
        "state": "ready", "alive": True, "ring_fill": 0.0, "consumer_lag": 0, "rss": 1, "uss": 1, "pss": 1,
        "cpu_seconds": 0.1, "reconnects": 0, "errors": 0,
        "latency": {"bounds_ns": [1000], "counts": [1, 0], "sum_s": 5e-7}},
        {"name": "sink-db", "role": "sink", "records_in": 1, "records_out": 1, "drops": {"gaps": 0}, "restarts": 0,
         "state": "ready", "alive": True, "ring_fill": 0.0, "consumer_lag": 0, "rss": 1, "uss": 1, "pss": 1,
         "cpu_seconds": 0.1, "reconnects": 0, "errors": 0, "store_lag_s": 0.2}]}
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in families(status)}
    documented = set(re.findall(r"^\| `(streamctl_[a-z_]+)`", (docs / "metrics.md").read_text(), re.M))
    assert documented == exported
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"streamctl_[a-z_]+", target["expr"])}
    histogram = {f"streamctl_worker_latency_seconds_{s}" for s in ("bucket", "count", "sum")}
    assert used and used <= exported | histogram, used - exported - histogram
