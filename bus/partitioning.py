"""Stable symbol -> partition assignment.

The same in every process and every run (CRC-32 of the UTF-8 symbol, never Python's salted
``hash()``), so a symbol's feed process and its worker always agree, a restart or a
second plant puts it in the same place, and a Kafka sink's partition for a symbol is its
plant partition. It lives in the bus so that ingest and the sinks share it.
"""

from __future__ import annotations

import zlib

__all__ = ["partition_of"]


def partition_of(symbol: str, partitions: int) -> int:
    """Partition index of `symbol` among `partitions` workers."""
    if partitions < 1:
        raise ValueError(f"`partitions` must be >= 1; was {partitions}")
    return zlib.crc32(symbol.encode("utf-8")) % partitions
