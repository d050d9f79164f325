"""Progress of long work on the command line: a replay's bar, and `up` while kernels compile.

On a terminal one line is redrawn in place (``\\r``); anywhere else (a log, a pipe, CI) nothing
is redrawn: a plain line at most every `PLAIN_EVERY` seconds, so logs stay readable and short.
"""

from __future__ import annotations

import time
from typing import IO

__all__ = ["ReplayProgress", "StartProgress", "PLAIN_EVERY", "format_eta"]

PLAIN_EVERY = 10.0
"""Seconds between two progress lines when the output is not a terminal."""
_BAR_WIDTH = 30
_RATE_OVER = 0.5
"""Shortest span (s) a records/s figure is measured over."""
_REDRAW_EVERY = 0.2
"""Seconds between two redraws on a terminal."""


def format_eta(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


class _Line:
    """One status line: redrawn on a terminal, a plain line now and then elsewhere."""

    def __init__(self, out: IO[str], tty: bool) -> None:
        self.out, self.tty = out, tty
        self._last_plain = time.monotonic()
        self._last_drawn = 0.0
        self._drawn = False

    def show(self, text: str, *, force: bool = False) -> None:
        if self.tty:
            if not force and time.monotonic() - self._last_drawn < _REDRAW_EVERY:
                return
            self._last_drawn = time.monotonic()
            self.out.write("\r\x1b[2K" + text)
            self._drawn = True
        elif force or time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.monotonic()
            self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


class ReplayProgress:
    """``[#####.....]  42%  1.2M records  830.0k rec/s  ETA 0:13`` for `streamctl replay`.

    The fraction is the replay feed's own (bytes of input read); records/s is measured over the
    last update, and the ETA is the elapsed time scaled by what is left.
    """

    def __init__(self, out: IO[str], *, tty: bool) -> None:
        self._line = _Line(out, tty)
        self._start = time.monotonic()
        self._prev: tuple[float, int] | None = None
        self._rate = 0.0

    def update(self, fraction: float | None, records: int) -> None:
        now = time.monotonic()
        if self._prev is not None and now - self._prev[0] >= _RATE_OVER:
            self._rate = max(records - self._prev[1], 0) / (now - self._prev[0])
            self._prev = (now, records)
        elif self._prev is None:  # the first report: the replay starts now (the plant is up)
            self._prev = (now, records)
            self._start = now
        if not self._rate and now > self._start:  # not measured over a span yet: the average so far
            self._rate = records / (now - self._start)
        done = fraction == 1.0  # the last state is always drawn on a terminal; a log gets the summary
        self._line.show(self.text(fraction, records, self._rate, now - self._start), force=done and self._line.tty)

    @staticmethod
    def text(fraction: float | None, records: int, rate: float, elapsed: float) -> str:
        if fraction is None:
            return f"replay: {_human(records)} records  {_human(rate)} rec/s  elapsed {format_eta(elapsed)}"
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * _BAR_WIDTH)
        eta = format_eta(elapsed * (1 - fraction) / fraction) if fraction > 0 else "?"
        return (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction * 100:3.0f}%  {_human(records)} records  "
                f"{_human(rate)} rec/s  ETA {eta}")

    def finish(self) -> None:
        self._line.end()


class StartProgress:
    """``starting plant demo: waiting for worker-0, worker-1 (12 s; ...)`` while `up` waits."""

    COMPILE_HINT_AFTER = 3.0
    """Seconds after which the line says why a first start is slow."""

    def __init__(self, plant: str, out: IO[str], *, tty: bool) -> None:
        self._plant = plant
        self._line = _Line(out, tty)
        self._start = time.monotonic()
        self._hinted = False

    def waiting(self, names: list[str]) -> None:
        elapsed = time.monotonic() - self._start
        text = f"starting plant {self._plant}: waiting for {', '.join(names)} ({elapsed:.0f} s)"
        hint = elapsed >= self.COMPILE_HINT_AFTER
        if hint:
            text += "; the first start on a machine compiles the numba kernels (2-3 min on 2 cores, cached afterwards)"
        self._line.show(text, force=hint and not self._hinted)
        self._hinted = self._hinted or hint

    def finish(self) -> None:
        self._line.end()
