"""The stores a sink writes to, one module per kind, all with the face of `Store`.

A store only turns batches of rows into idempotent writes and says what it already holds;
batching, the backlog, retries and counters belong to the sink loop (`streamctl.sinks.runner`).
Each kind's client library is imported only when a sink of that kind starts, with an
install hint if it is missing.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from streamctl.sinks.rows import Row, Table
from streamctl.sinks.settings import SinkConfig

__all__ = ["Store", "StoreDown", "Held", "open_store", "require"]

Held = list[tuple[str, str, int]]
"""What a store holds, as (plant topic, src, seq of the latest row of that pair)."""


class StoreDown(Exception):
    """The store cannot be reached now: the sink keeps its rows and tries again later."""


class Store(Protocol):
    """What the sink loop needs of a store."""

    def open(self) -> None:
        """Connect, and create the tables (or topics, streams, folders) if absent.

        Raises `StoreDown` when the server cannot be reached."""

    def write(self, batches: dict[Table, list[Row]]) -> int:
        """Store every row (idempotently: a row whose natural key is held is not added again);
        return how many were new. Raises `StoreDown` when the store went away mid-write, in
        which case nothing of this call counts as written (the sink writes it all again)."""

    def tick(self) -> None:
        """Called at least once a second: a store that buffers (Parquet's open files) writes
        out what is due; others have nothing to do."""

    def held(self) -> Held:
        """The latest row the store holds per (topic, src): where the plant's history
        (`streamctl.sinks.recovery`) should resume."""

    def close(self) -> None:
        """Make written rows durable and release the connection; safe to call twice."""


_MODULES = {"parquet": "parquet", "sqlite": "sqlite", "postgres": "postgres", "redis": "redis", "kafka": "kafka"}


def open_store(config: SinkConfig, *, plant_partitions: int) -> Store:
    """A store for `config` (not yet opened). `plant_partitions` is the plant's partition count
    (Kafka's default partitioning)."""
    kind = type(config).__struct_config__.tag
    module = importlib.import_module(f"streamctl.sinks.stores.{_MODULES[str(kind)]}")
    return module.make(config, plant_partitions=plant_partitions)


def require(module: str, package: str, kind: str):
    """Import a store's client library, or fail saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"a `{kind}` sink needs the `{package}` package: pip install '{package}'") from None
