"""Feed clocks: the time by which a worker closes time bars (docs/calculators.md, "Bar timing").

A feed's clock is the latest event time read from its ring. A wall-clocked feed (a live vendor,
or a source that stamps records with the wall clock) that is quiet also moves on with the wall
clock from the moment its last record was read, but never past the feed process's last
heartbeat: a stalled or dead feed process is not quiet, just not heard from. A replay's time is
its file's: only its records move its clock, so a paced replay closes the same bars as
`streamctl replay`. One record dated far ahead (more than `max_jump` past the clock) does not
move it alone: it must be confirmed by a second record past that point, and the clock then
moves to the earlier of the two, so one wild ``ts_event`` never closes every open bar.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NO_TIME", "FeedClock", "symbol_clocks"]

NO_TIME = int(np.iinfo(np.int64).min)
"""The clock of a feed that has delivered nothing yet: it closes no bar."""


class FeedClock:
    """One feed's clock as one worker sees it through its ring."""

    __slots__ = ("wall_clocked", "max_jump", "event", "read_at", "suspect", "held")

    def __init__(self, *, wall_clocked: bool, max_jump: int = 600_000_000_000):
        self.wall_clocked = wall_clocked
        self.max_jump = max_jump
        """ns: a record further than this past the clock needs a second one to confirm it."""
        self.event = NO_TIME
        """The latest event time read from the ring (ns)."""
        self.read_at = 0
        """Wall time (ns) at which the last record was read."""
        self.suspect: int | None = None
        """The event time of one record past the jump limit, waiting for a second."""
        self.held = 0
        """Records whose event time the clock did not take alone."""

    def saw(self, ts_event: np.ndarray, now: int) -> None:
        """Records (their ``ts_event``) were read from the ring at wall time `now`."""
        if not len(ts_event):
            return
        self.read_at = now
        top = int(ts_event.max())
        if self.event == NO_TIME or top <= self.event + self.max_jump:
            self.event = max(self.event, top)
            return
        limit = self.event + self.max_jump
        within = ts_event[ts_event <= limit]
        if len(within):
            self.event = max(self.event, int(within.max()))
        beyond = ts_event[ts_event > self.event + self.max_jump].tolist()
        if self.suspect is not None and self.suspect > self.event + self.max_jump:
            beyond.append(self.suspect)
        if len(beyond) >= 2:  # confirmed: the clock moves to the earlier of the two latest
            self.event = sorted(beyond)[-2]
            self.suspect = None
        elif beyond:
            self.suspect = beyond[0]
            self.held += 1

    def time(self, now: int, *, quiet: bool, alive_at: int) -> int:
        """The clock at wall time `now`.

        `quiet`: the ring holds nothing unread (a backlog is not silence). `alive_at`: the feed
        process's last heartbeat on the ring (wall ns); the clock never moves past it.
        """
        if not (self.wall_clocked and quiet) or self.event == NO_TIME:
            return self.event
        return self.event + max(0, min(now, alive_at) - self.read_at)


def symbol_clocks(clocks: list[int], carried: list[np.ndarray], n_symbols: int) -> np.ndarray:
    """Per local symbol index: the earliest clock of the feeds that carry it.

    `carried[i]` holds the local indices feed `i` has delivered. A symbol carried by two feeds
    closes its bars by the one behind, so neither feed's trades come late.
    """
    out = np.full(n_symbols, np.iinfo(np.int64).max, dtype=np.int64)
    for clock, symbols in zip(clocks, carried, strict=True):
        out[symbols] = np.minimum(out[symbols], clock)
    return out
