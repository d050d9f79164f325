"""The one place that locates the sample data in `tests/data` (origin and licence: its SOURCES.md).

A missing file fails the test instead of skipping it: the data is part of the repository, so a
missing file is a broken checkout, not an optional extra.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["DATA", "sample"]

DATA = Path(__file__).resolve().parent / "data"


def sample(name: str) -> Path:
    """Absolute path of `name` (relative to `tests/data`); fails the test when the file is absent."""
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"sample file `{name}` must exist in {DATA}, was missing (see tests/data/SOURCES.md)")
    return path
