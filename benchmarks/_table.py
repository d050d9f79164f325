"""What every benchmark script shares: its command line and the table it prints.

Each ``bench_<name>.py`` exposes ``run(quick, ...) -> [{"benchmark", "value", "unit", "note"}]``
and ends with ``raise SystemExit(bench_main(run, __doc__))``; ``run_all.py`` prints the same
rows as one Markdown table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from math import floor, isfinite, log10
from typing import Any

__all__ = ["fmt", "print_rows", "bench_main"]

Row = dict[str, Any]


def fmt(value: Any) -> str:
    """Three significant digits, thousands separated: 5,669,424 -> 5,670,000; 79.95 -> 80.0."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if value == 0:
        return "0"
    if not isfinite(value):  # a measurement that failed (a process gone): say so, print the rest
        return str(value)
    digits = 3 - 1 - floor(log10(abs(value)))
    rounded = round(value, digits)
    return f"{rounded:,.{max(digits, 0)}f}"


def print_rows(rows: Sequence[Row]) -> None:
    """An aligned plain-text table, columns as wide as their widest cell."""
    cells = [(r["benchmark"], fmt(r["value"]), r["unit"], r["note"]) for r in rows]
    head = ("benchmark", "value", "unit", "note")
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(3)]
    for name, value, unit, note in [head, *cells]:
        print(f"{name:<{widths[0]}}  {value:>{widths[1]}}  {unit:<{widths[2]}}  {note}")


def bench_main(run: Callable[..., list[Row]], doc: str | None, argv: list[str] | None = None,
               options: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse ``--quick`` (and the script's own `options`), run, print the table."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, fewer repeats")
    if options is not None:
        options(parser)
    args = vars(parser.parse_args(argv))
    print_rows(run(**args))
    return 0
