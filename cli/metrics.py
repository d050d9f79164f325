"""Metrics: the supervisor's Prometheus endpoint (``metrics: {listen: ...}``, `docs/metrics.md`).

Every scrape turns one `collect_status` snapshot into metric families, so what Prometheus
sees is exactly what `streamctl status --json` shows, from the same shared memory, and the
plant's processes pay nothing for it. Served by the official `prometheus_client` HTTP server
in a daemon thread of the supervisor; a lock keeps a scrape from reading segments that the
supervisor is unmapping at stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from streamctl.cli.config import MetricsConfig, parse_listen

__all__ = ["PlantCollector", "MetricsServer", "STATES"]

STATES = ("starting", "ready", "reconnecting", "stopping", "exited", "failed")
"""The values of the `state` label of ``streamctl_process_state`` (one series each, 1 = current)."""

_PROCESS_LABELS = ["plant", "process", "role"]


class PlantCollector(Collector):
    """One scrape = one status snapshot, turned into Prometheus metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """After this, scrapes return nothing (waits for one in progress to finish)."""
        with self._lock:
            self._closed = True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._closed:
                return
            status = self._snapshot()
        yield from families(status)


def families(status: dict[str, Any]) -> list[Metric]:
    """The metric families of one `collect_status` snapshot."""
    plant = status["plant"]

    def counter(name: str, doc: str, labels: list[str] = _PROCESS_LABELS) -> CounterMetricFamily:
        return CounterMetricFamily(f"streamctl_{name}", doc, labels=labels)

    def gauge(name: str, doc: str, labels: list[str] = _PROCESS_LABELS) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"streamctl_{name}", doc, labels=labels)

    rin = counter("process_records_in", "Records a process took in (feeds: from the vendor; workers: from rings).")
    rout = counter("process_records_out", "Records (feeds) or messages (workers, hub) a process handed on.")
    drops = counter("process_drops", "Records dropped, by cause (overflow, malformed, late, gaps).",
                    [*_PROCESS_LABELS, "cause"])
    restarts = counter("process_restarts", "Times the supervisor restarted the process.")
    state = gauge("process_state", "1 for the state the process is in, 0 for the others.", [*_PROCESS_LABELS, "state"])
    up = gauge("process_up", "1 while the process is alive (starting, ready, reconnecting or stopping).")
    fill = gauge("process_ring_fill_ratio", "Fullest ring the process writes (feeds) or reads (workers), 0..1.")
    lag = gauge("process_consumer_lag_records", "Records written to the process's rings and not yet consumed.")
    rss = gauge("process_resident_memory_bytes", "Resident set size (counts pages shared with the forkserver).")
    uss = gauge("process_unique_memory_bytes", "Unique set size: memory only this process holds.")
    pss = gauge("process_proportional_memory_bytes", "Proportional set size: shared pages split among users.")
    cpu = counter("process_cpu_seconds", "User and system CPU time of the process (its current incarnation).")
    reconnects = counter("feed_reconnects", "Times a feed reconnected to its vendor.", ["plant", "feed"])
    duplicates = counter("feed_duplicates", "Copies of input a feed had already received (A/B arbitration), not drops.",
                         ["plant", "feed"])
    errors = counter("feed_errors", "Vendor errors a feed saw (error messages, refused sessions, bad files).",
                     ["plant", "feed"])
    sink_rows = counter("sink_rows_written", "Rows a sink wrote to its store (new rows; those it already held are not counted).",
                        ["plant", "sink"])
    sink_backlog = gauge("sink_backlog_rows", "Rows a sink received and has not yet written to its store.", ["plant", "sink"])
    sink_lag = gauge("sink_store_lag_seconds", "Wall clock minus ts_recv of the newest row the sink has stored.",
                     ["plant", "sink"])
    sink_errors = counter("sink_store_errors", "Times a sink's store failed (refused, dropped or timed out).",
                          ["plant", "sink"])
    latency = HistogramMetricFamily("streamctl_worker_latency_seconds",
                                    "Per record: ts_recv (ingest) to handed to the publisher, in the worker.",
                                    labels=["plant", "process"])
    for p in status["processes"]:
        labels = [plant, p["name"], str(p["role"])]
        rin.add_metric(labels, p["records_in"])
        rout.add_metric(labels, p["records_out"])
        for cause, n in p["drops"].items():
            drops.add_metric([*labels, cause], n)
        restarts.add_metric(labels, p["restarts"])
        for name in STATES:
            state.add_metric([*labels, name], 1.0 if p["state"] == name else 0.0)
        up.add_metric(labels, 1.0 if p["alive"] else 0.0)
        fill.add_metric(labels, p["ring_fill"])
        lag.add_metric(labels, p["consumer_lag"])
        rss.add_metric(labels, p["rss"])
        uss.add_metric(labels, p["uss"])
        pss.add_metric(labels, p["pss"])
        cpu.add_metric(labels, p["cpu_seconds"])
        if p["role"] == "ingest":
            reconnects.add_metric([plant, p["name"]], p["reconnects"])
            errors.add_metric([plant, p["name"]], p["errors"])
            duplicates.add_metric([plant, p["name"]], p["duplicates"])
        if p["role"] == "sink":
            sink_rows.add_metric([plant, p["name"]], p["records_out"])
            sink_backlog.add_metric([plant, p["name"]], p["consumer_lag"])
            sink_errors.add_metric([plant, p["name"]], p["errors"])
            if p.get("store_lag_s") is not None:
                sink_lag.add_metric([plant, p["name"]], p["store_lag_s"])
        hist = p.get("latency")
        if hist is not None:
            buckets, total = [], 0
            for bound, n in zip([*hist["bounds_ns"], None], hist["counts"], strict=True):
                total += n
                buckets.append(("+Inf" if bound is None else repr(bound / 1e9), total))
            latency.add_metric([plant, p["name"]], buckets, hist["sum_s"])
    return [rin, rout, drops, restarts, state, up, fill, lag, rss, uss, pss, cpu, reconnects, errors, duplicates,
            sink_rows, sink_backlog, sink_lag, sink_errors, latency]


class MetricsServer:
    """The HTTP endpoint: `start()` once the plant is provisioned, `close()` before it is released."""

    def __init__(self, config: MetricsConfig, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port = parse_listen(config.listen, allow_remote=config.allow_remote)
        self._collector = PlantCollector(snapshot)
        self._server: Any = None

    def start(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self._collector)
        self._server, _thread = start_http_server(self.port, addr=self.host, registry=registry)

    def close(self) -> None:
        self._collector.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
