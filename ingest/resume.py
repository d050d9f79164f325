"""Where a live feed resumes after a lost connection or a restart of its process.

A vendor that can replay from an event time (Databento's intraday replay, ``start``) is asked
for everything from the latest ``ts_event`` the feed's rings hold. The replay repeats the
records at that very time that were already delivered, so `ResumePoint` also counts them per
instrument and record kind, and `AlreadyDelivered` drops exactly those: the plant sees no gap and
no duplicate, whether the gateway replays its schemas interleaved by time or one after another.
The rings are the truth because they survive a SIGKILL of the feed between two batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamctl.shm.records import Kind
from streamctl.shm.ring import Ring

__all__ = ["ResumePoint", "resume_point", "AlreadyDelivered"]


@dataclass(frozen=True)
class ResumePoint:
    """The latest event time delivered, and how many records of each (instrument, kind) carry it."""

    ts_event: int
    delivered_at_ts: dict[tuple[int, int], int] = field(default_factory=dict)


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
    at = records[records["ts_event"] == last]
    counts = Counter(zip(at["instrument_id"].tolist(), at["kind"].tolist(), strict=True))
    return ResumePoint(last, dict(counts))


class AlreadyDelivered:
    """Drops, from a stream replayed from `point.ts_event`, the records the rings already hold:
    records before the point, and the first ``delivered_at_ts[(i, k)]`` records of instrument
    ``i`` and kind ``k`` at the point. It is done (passes everything) once those are all dropped
    and a record after the point has come.
    """

    def __init__(self, point: ResumePoint):
        self.point = point
        self._left = {key: n for key, n in point.delivered_at_ts.items() if n}
        self._later = False
        self.dropped = 0
        self.done = False

    def apply(self, records: np.ndarray) -> np.ndarray:
        """`records` (our instrument ids) without those already delivered."""
        if self.done or not len(records):
            return records
        ts = records["ts_event"]
        at = self.point.ts_event
        keep = ts > at
        same = np.flatnonzero(ts == at)
        if len(same):
            keys = zip(records["instrument_id"][same].tolist(), records["kind"][same].tolist(), strict=True)
            for i, key in zip(same.tolist(), keys, strict=True):
                left = self._left.get(key, 0)
                if left > 1:
                    self._left[key] = left - 1
                elif left:
                    del self._left[key]
                else:
                    keep[i] = True
        self._later = self._later or bool((ts > at).any())
        self.done = self._later and not self._left
        kept = int(np.count_nonzero(keep))
        self.dropped += len(records) - kept
        return records if kept == len(records) else records[keep]
