"""Session boundaries for the session VWAP: a local time of day in an IANA time zone.

A session starts every day at ``HH:MM`` local time. Boundaries are computed once per local
day with `zoneinfo` (so daylight-saving changes move them correctly in UTC) and kept as a
sorted int64 array of UTC nanoseconds that the numba kernel binary-searches. A start time that
does not exist on a spring-forward day (inside the gap) is read with ``fold=0``, i.e. with the
offset in force before the change (02:30 in New York becomes 03:30 EDT); on a fall-back day an
ambiguous start is the first occurrence.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import numpy as np

__all__ = ["SessionClock"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MARGIN_DAYS = 2
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class SessionClock:
    """Daily session starts at `start` (``"HH:MM"``) in time zone `timezone`.

    `cover` returns the table of boundaries, extended so that every timestamp in
    ``[tmin, tmax]`` has a boundary at or before it and one after it.
    """

    def __init__(self, start: str, timezone: str):
        match = _HHMM.match(start)
        if not match:
            raise ValueError(f"`session_start` must be HH:MM (00:00 to 23:59); was {start!r}")
        try:
            self._zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"`timezone` must be an IANA time zone; was {timezone!r}") from None
        self._hour, self._minute = int(match.group(1)), int(match.group(2))
        self._first: dt.date | None = None
        self._last: dt.date | None = None
        self.bounds = np.zeros(0, dtype=np.int64)

    def start_ns(self, day: dt.date) -> int:
        """UTC nanoseconds of the session start on local date `day`."""
        local = dt.datetime(day.year, day.month, day.day, self._hour, self._minute, tzinfo=self._zone)
        return (local - _EPOCH) // dt.timedelta(microseconds=1) * 1000

    def cover(self, tmin: int, tmax: int) -> np.ndarray:
        """The boundary table, grown if needed to bracket every time in ``[tmin, tmax]``."""
        if len(self.bounds) and self.bounds[0] <= tmin and tmax < self.bounds[-1]:
            return self.bounds
        margin = dt.timedelta(days=_MARGIN_DAYS)
        first = (_EPOCH + dt.timedelta(microseconds=tmin // 1000)).date() - margin
        last = (_EPOCH + dt.timedelta(microseconds=tmax // 1000)).date() + margin
        if self._first is not None and self._last is not None:
            first, last = min(first, self._first), max(last, self._last)
        days = (last - first).days + 1
        self.bounds = np.array([self.start_ns(first + dt.timedelta(days=d)) for d in range(days)], dtype=np.int64)
        self._first, self._last = first, last
        return self.bounds
