"""``feeds[i].options`` of a ``replay`` feed: the files, the pace, looping and the format."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from streamctl.ingest.formats.tabular import detect_format

__all__ = ["Options"]


class Options(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    files: Annotated[list[str], Meta(min_length=1)]
    """Input files, replayed in order (paths relative to the working directory)."""
    speed: Literal["max"] | Annotated[float, Meta(gt=0)] = "max"
    """``max``: as fast as possible; a number: that multiple of real time, by ``ts_event``."""
    loop: bool = False
    """Start again from the first file at the end (ids and records identical every loop)."""
    format: Literal["auto", "dbn", "csv", "parquet"] = "auto"
    """``auto``: by extension (.dbn, .dbn.zst, .csv, .parquet)."""
    batch: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096
    """Most records handed out per poll."""

    def check(self) -> tuple[str, str, object] | None:
        for i, path in enumerate(self.files):
            if not os.path.isfile(path):
                return f"files[{i}]", "does not exist", path
            if self.format == "auto" and detect_format(path) is None:
                return f"files[{i}]", "has an unknown extension (use .dbn, .dbn.zst, .csv, .parquet or set `format`)", path
        return None
