"""Where a live feed resumes after a lost connection or a restart of its process.

A vendor that can replay from an event time (Databento's intraday replay, ``start``) is asked
for everything from the latest ``ts_event`` the feed's rings hold. The replay repeats the
records at that very time that were already delivered, so `ResumePoint` also counts them per
instrument and `AlreadyDelivered` drops exactly those: the plant sees no gap and no duplicate.
The rings are the truth because they survive a SIGKILL of the feed between two batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamctl.shm.records import Kind
from streamctl.shm.ring import Ring

__all__ = ["ResumePoint", "resume_point", "AlreadyDelivered"]


@dataclass(frozen=True)
class ResumePoint:
    """The latest event time delivered, and how many records of each instrument carry it."""

    ts_event: int
    delivered_at_ts: dict[int, int] = field(default_factory=dict)


def resume_point(rings: Sequence[Ring]) -> ResumePoint | None:
    """The resume point of what `rings` hold (None when they hold no vendor record yet).

    RESET records are the feed's own (stamped with the wall clock), not the vendor's: ignored.
    """
    if not rings:
        return None
    records = np.concatenate([ring.tail(ring.capacity) for ring in rings])
    records = records[records["kind"] != Kind.RESET]
    if not len(records):
        return None
    last = int(records["ts_event"].max())
    ids, counts = np.unique(records["instrument_id"][records["ts_event"] == last], return_counts=True)
    return ResumePoint(last, dict(zip(ids.tolist(), counts.tolist(), strict=True)))


class AlreadyDelivered:
    """Drops, from a stream replayed from `point.ts_event`, the records the rings already hold.

    Records before the point, and the first ``delivered_at_ts[i]`` records of instrument ``i``
    at the point, were delivered; everything from the first record after the point is new.
    """

    def __init__(self, point: ResumePoint):
        self.point = point
        self._left = dict(point.delivered_at_ts)
        self.dropped = 0
        self.done = False

    def apply(self, records: np.ndarray) -> np.ndarray:
        """`records` (our instrument ids) without those already delivered."""
        if self.done or not len(records):
            return records
        ts = records["ts_event"]
        at = self.point.ts_event
        later = np.flatnonzero(ts > at)
        end = int(later[0]) if len(later) else len(records)
        keep = np.zeros(end, np.bool_)
        ids = records["instrument_id"][:end].tolist()
        for i in np.flatnonzero(ts[:end] == at).tolist():
            left = self._left.get(ids[i], 0)
            if left:
                self._left[ids[i]] = left - 1
            else:
                keep[i] = True
        if len(later):
            self.done = True
        self.dropped += end - int(np.count_nonzero(keep))
        if end == len(records):
            return records[keep]
        return np.concatenate([records[:end][keep], records[end:]])
