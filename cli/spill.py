"""A stable external sort: rows kept in sorted runs on disk, read back by a k-way merge.

`streamctl replay` sorts everything it recorded by (event time, topic, seq); held in memory
that took gigabytes for a few million records. Here at most `run_rows` rows are in memory:
each full buffer is sorted (``sorted`` is stable) and written as a run file of msgpack blocks;
`merged` reads the runs back a block at a time through ``heapq.merge``, which puts equal keys
from an earlier run first, so the result is exactly ``sorted(all rows, key=key)``. When
`fan_in` runs of one size exist they are merged into one bigger run (the same stable merge of
consecutive runs), so the number of open runs, and the memory of the final merge, grows only
with the logarithm of the input. Run files live in a private temporary folder that `close`
removes, whatever happened.
"""

from __future__ import annotations

import heapq
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["SortedSpill", "RUN_ROWS_ENV"]

RUN_ROWS_ENV = "STREAMCTL_SPILL_ROWS"
"""Environment variable overriding the default run size (tests force tiny runs through it)."""

_DEFAULT_RUN_ROWS = 50_000
_BLOCK_ROWS = 512  # rows per msgpack block: what one run holds in memory while merging
_LENGTH = struct.Struct("<I")

Key = tuple[int, str, int]
_Item = tuple[Key, dict[str, Any]]
_first = itemgetter(0)


def _run_rows() -> int:
    text = os.environ.get(RUN_ROWS_ENV)
    if text is None:
        return _DEFAULT_RUN_ROWS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"`{RUN_ROWS_ENV}` must be an integer >= 1, was {text!r}")
    return value


class SortedSpill:
    """Rows added in arrival order, read back sorted by `key` (ties in arrival order).

    Parameters
    ----------
    key
        The sort key of a row.
    run_rows
        Rows held in memory before a sorted run goes to disk (default: ``STREAMCTL_SPILL_ROWS``
        or 50,000).
    fan_in
        Runs of one level merged into one run of the next level.
    """

    def __init__(self, key: Callable[[dict[str, Any]], Key], *, run_rows: int | None = None, fan_in: int = 16):
        self._key = key
        self.run_rows = run_rows or _run_rows()
        self.fan_in = max(2, fan_in)
        self._buffer: list[_Item] = []
        self._runs: list[tuple[int, Path]] = []  # (level, file), in arrival order
        self._folder: Path | None = None
        self._made = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[tuple[tuple[int, str, int], dict[str, Any]]])
        self.rows = 0
        self.spilled_runs = 0
        """Run files written so far (merges included): how much the disk was used."""

    def __enter__(self) -> SortedSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append((self._key(row), row))
        self.rows += 1
        if len(self._buffer) >= self.run_rows:
            self._spill()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.merged()

    def merged(self) -> Iterator[dict[str, Any]]:
        """Every row, sorted; may be called more than once (the runs stay until `close`)."""
        self._buffer.sort(key=_first)
        sources: list[Iterator[_Item]] = [self._read(path) for _, path in self._runs]
        sources.append(iter(self._buffer))
        for _, row in heapq.merge(*sources, key=_first):
            yield row

    def close(self) -> None:
        """Remove every run file and the folder; the rows are gone."""
        self._buffer = []
        self._runs = []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def folder(self) -> Path | None:
        """Where the run files are (None until the first spill)."""
        return self._folder

    # ---- internals
    def _spill(self) -> None:
        self._buffer.sort(key=_first)
        self._runs.append((0, self._write(iter(self._buffer))))
        self._buffer = []
        while len(self._runs) >= self.fan_in and len({level for level, _ in self._runs[-self.fan_in:]}) == 1:
            tail = self._runs[-self.fan_in:]
            del self._runs[-self.fan_in:]
            merged = self._write(heapq.merge(*(self._read(path) for _, path in tail), key=_first))
            for _, path in tail:
                path.unlink()
            self._runs.append((tail[0][0] + 1, merged))

    def _write(self, items: Iterator[_Item]) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="streamctl-spill-"))
        path = self._folder / f"run-{self._made:06d}.msgpack"
        self._made += 1
        self.spilled_runs += 1
        with open(path, "wb") as fh:
            block: list[_Item] = []
            for item in items:
                block.append(item)
                if len(block) >= _BLOCK_ROWS:
                    self._write_block(fh, block)
                    block = []
            if block:
                self._write_block(fh, block)
        return path

    def _write_block(self, fh: Any, block: list[_Item]) -> None:
        data = self._encoder.encode(block)
        fh.write(_LENGTH.pack(len(data)))
        fh.write(data)

    def _read(self, path: Path) -> Iterator[_Item]:
        with open(path, "rb") as fh:
            while head := fh.read(_LENGTH.size):
                (size,) = _LENGTH.unpack(head)
                yield from self._decoder.decode(fh.read(size))
