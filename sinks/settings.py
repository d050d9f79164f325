"""The ``sinks:`` section of a plant config: one typed entry per sink, tagged by ``kind``.

Each entry is a frozen msgspec Struct chosen by its ``kind`` field (``parquet``, ``sqlite``,
``postgres``, ``redis``, ``kafka``), so an unknown option or a bad value is refused at load
with its path (``sinks[1].port``). Secrets (``password``) must come from the environment
(``${PGPASSWORD}``): `cli/config.py` refuses one written into the file.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from streamctl.bus.retry import ReconnectPolicy

__all__ = [
    "SinkConfig",
    "ParquetSink",
    "SqliteSink",
    "PostgresSink",
    "RedisSink",
    "KafkaSink",
    "SINK_KINDS",
    "STORED_KINDS",
    "SECRET_FIELDS",
]

STORED_KINDS = frozenset({"bar", "trade", "quote", "anomaly"})
"""Topic kinds a sink stores (each has a table: bars, trades, quotes, anomalies)."""

SECRET_FIELDS = ("password",)
"""Options that must be given as ``${ENV_VAR}``, never written into the config file."""

_NAME = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$")]
_POS = Annotated[int, Meta(ge=1)]


def _store_retry() -> ReconnectPolicy:
    """A store may be down for a while (a database restart): retry long before giving up."""
    return ReconnectPolicy(delays=[0.5, 1.0, 2.0, 4.0], max_delay=10.0, max_failures=60)


class _Sink(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    name: _NAME
    """Process name `sink-<name>` in `status`; unique among sinks."""
    topics: Annotated[list[str], Meta(min_length=1)]
    """Exact topics or prefixes, as `streamctl tail` takes them (``bar.60s.``, ``trade.AAPL``)."""
    batch_rows: Annotated[int, Meta(ge=1, le=1_000_000)] = 5_000
    """A batch is written once it has this many rows ..."""
    batch_seconds: Annotated[float, Meta(gt=0, le=3600)] = 0.5
    """... or when its oldest row has waited this long."""
    backlog_rows: Annotated[int, Meta(ge=1)] = 1_000_000
    """Rows held while the store is slow or down; beyond it rows are counted (``overflow``)
    and asked back from the plant's history."""
    reconnect: ReconnectPolicy = msgspec.field(default_factory=_store_retry)
    """When to try a lost store again (the plant's one reconnect policy)."""


class ParquetSink(_Sink, tag="parquet", frozen=True):
    """A Hive-partitioned Parquet dataset (``kind=/date=/symbol=``), no server."""

    path: str
    roll_rows: _POS = 100_000
    """A partition's open file is written (atomically) once it has this many rows ..."""
    roll_seconds: Annotated[float, Meta(gt=0)] = 60.0
    """... or is this old."""


class SqliteSink(_Sink, tag="sqlite", frozen=True):
    """An SQLite file in WAL mode: the stream-to-cache store."""

    path: str


class PostgresSink(_Sink, tag="postgres", frozen=True):
    """PostgreSQL >= 14 (TimescaleDB hypertables when the extension is installed)."""

    host: str = "127.0.0.1"
    """A host name, or a directory holding the server's unix socket."""
    port: Annotated[int, Meta(ge=1, le=65535)] = 5432
    dbname: str = "postgres"
    user: str = "postgres"
    password: str | None = None
    """Only as ``${ENV_VAR}``."""
    schema: Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "public"


class RedisSink(_Sink, tag="redis", frozen=True):
    """Redis: PUBLISH per row, a capped stream per topic, a hash of last values per kind."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 6379
    db: Annotated[int, Meta(ge=0)] = 0
    password: str | None = None
    """Only as ``${ENV_VAR}``."""
    stream_maxlen: _POS = 100_000
    """Each stream is capped near this many entries (``XADD MAXLEN ~``)."""
    prefix: str = ""
    """Put before every key and channel (``desk1:`` gives ``desk1:bar.60s.AAPL``)."""


class KafkaSink(_Sink, tag="kafka", frozen=True):
    """Kafka: one topic per kind, key = symbol, partition = the plant's CRC-32 partition."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "streamctl."
    """Kafka topics are `<prefix>bars`, `<prefix>trades`, `<prefix>quotes`, `<prefix>anomalies`."""
    partitions: _POS | None = None
    """Kafka partitions per topic; by default the plant's `partitions.count`, so a symbol's
    Kafka partition is its plant partition."""


SinkConfig = ParquetSink | SqliteSink | PostgresSink | RedisSink | KafkaSink
SINK_KINDS = ("parquet", "sqlite", "postgres", "redis", "kafka")
