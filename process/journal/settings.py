"""Journal settings: the ``journal:`` section of a plant config (`docs/journal.md`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["JournalConfig", "SyncPolicy"]

SyncPolicy = Literal["none", "batch", "interval"]


class JournalConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    """Journal every record a worker consumes (and rebuild a restarted worker from it)."""
    dir: str | None = None
    """The plant's data directory; ``null``: ``$XDG_DATA_HOME/streamctl/<plant name>`` (by default
    ``~/.local/share/streamctl/<plant name>``). Each partition writes under ``journal/p<N>/``."""
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 7
    """Files of event-time days older than this many days before the newest are deleted."""
    sync: SyncPolicy = "interval"
    """``none``: leave writes to the page cache (a killed worker loses nothing, a lost machine may);
    ``batch``: ``fdatasync`` after every batch; ``interval``: ``fdatasync`` every `sync_interval` s."""
    sync_interval: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    """Seconds between syncs with ``sync: interval``."""
    checkpoint_interval: Annotated[float, Meta(gt=0, le=86400)] | None = 60.0
    """Seconds between checkpoints of a worker's state (``null``: not by time). A restarted
    worker loads the newest and replays only the journal after it (`docs/journal.md`)."""
    checkpoint_records: Annotated[int, Meta(ge=1)] | None = 1_000_000
    """Also take one after this many records journaled since the last (``null``: not by count),
    so restart time stays bounded at any rate."""
    checkpoint_keep: Annotated[int, Meta(ge=1, le=100)] = 2
    """Checkpoints kept per run (older ones deleted); a corrupt newest falls back to the one before."""
