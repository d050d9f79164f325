"""The feed-clock rule (`streamctl.process.feed_clock`), with synthetic batches and a wall clock the
test controls. The calculators closing each symbol by its own clock: `test_calc_bars.py`."""

from __future__ import annotations

import numpy as np

from streamctl.process.feed_clock import NO_TIME, FeedClock, symbol_clocks

SEC = 1_000_000_000
EVENT = 1_719_878_400 * SEC
"""Event time of the synthetic feed: 2024, far from the test's wall clock."""
WALL = 1_900_000_000 * SEC


def _ts(*times: int) -> np.ndarray:
    return np.array(times, dtype=np.int64)


def test_a_replay_clock_is_its_latest_event_time_and_never_the_wall_clock():
    clock = FeedClock(wall_clocked=False)
    assert clock.time(WALL, quiet=True, alive_at=WALL) == NO_TIME
    clock.saw(_ts(EVENT + 3 * SEC, EVENT + 1 * SEC), WALL)  # out of order: the latest counts
    assert clock.time(WALL, quiet=True, alive_at=WALL) == EVENT + 3 * SEC
    clock.saw(_ts(EVENT + 2 * SEC), WALL + 5 * SEC)  # an older record never moves it back
    assert clock.time(WALL + 60 * SEC, quiet=True, alive_at=WALL + 60 * SEC) == EVENT + 3 * SEC
    clock.saw(_ts(), WALL + 70 * SEC)  # an empty read is no record
    assert clock.read_at == WALL + 5 * SEC


def test_a_live_quiet_feed_moves_on_with_the_wall_clock_from_its_last_record():
    clock = FeedClock(wall_clocked=True)
    clock.saw(_ts(EVENT), WALL)
    assert clock.time(WALL, quiet=True, alive_at=WALL) == EVENT
    assert clock.time(WALL + 2 * SEC, quiet=True, alive_at=WALL + 2 * SEC) == EVENT + 2 * SEC
    # Not quiet (records wait in the ring): the clock waits for them.
    assert clock.time(WALL + 2 * SEC, quiet=False, alive_at=WALL + 2 * SEC) == EVENT
    # Measured from the last record read, not from the one with the latest event time.
    clock.saw(_ts(EVENT - SEC), WALL + 3 * SEC)
    assert clock.time(WALL + 4 * SEC, quiet=True, alive_at=WALL + 4 * SEC) == EVENT + SEC


def test_the_wall_clock_part_stops_at_the_feed_process_last_heartbeat():
    clock = FeedClock(wall_clocked=True)
    clock.saw(_ts(EVENT), WALL)
    # A stalled (or dead) feed process is not a quiet feed: only its heartbeats advance the clock.
    assert clock.time(WALL + 10 * SEC, quiet=True, alive_at=WALL + SEC) == EVENT + SEC
    # A heartbeat from before the last record (or a clock read before the heartbeat) adds nothing.
    assert clock.time(WALL + 10 * SEC, quiet=True, alive_at=WALL - SEC) == EVENT
    assert clock.time(WALL + SEC, quiet=True, alive_at=WALL + 5 * SEC) == EVENT + SEC


def test_a_wall_clock_feed_clock_is_the_wall_clock():
    """The simulator's `clock: wall` stamps records with the time they are made."""
    clock = FeedClock(wall_clocked=True)
    clock.saw(_ts(WALL), WALL)
    for later in (WALL + 1, WALL + SEC // 4, WALL + 90 * SEC):
        assert clock.time(later, quiet=True, alive_at=later) == later


def test_symbol_clocks_take_the_feed_behind():
    clocks = [EVENT + 5 * SEC, EVENT + 2 * SEC, NO_TIME]
    carried = [np.array([0, 1], np.int32), np.array([1, 2], np.int32), np.array([], np.int32)]
    assert symbol_clocks(clocks, carried, 3).tolist() == [EVENT + 5 * SEC, EVENT + 2 * SEC, EVENT + 2 * SEC]
    assert symbol_clocks([NO_TIME], [np.array([0], np.int32)], 1).tolist() == [NO_TIME]


def test_one_wild_future_record_does_not_move_the_clock_until_a_second_confirms_a_jump():
    clock = FeedClock(wall_clocked=False, max_jump=600 * SEC)
    clock.saw(_ts(EVENT), WALL)
    wild = EVENT + 166 * 365 * 86_400 * SEC  # a year-2190 ts_event among 2024 records
    clock.saw(_ts(EVENT + 1 * SEC, wild, EVENT + 2 * SEC), WALL)
    assert clock.time(WALL, quiet=True, alive_at=WALL) == EVENT + 2 * SEC and clock.held == 1
    clock.saw(_ts(EVENT + 600 * SEC), WALL)  # up to the limit: moves as usual
    assert clock.event == EVENT + 600 * SEC
    weekend = EVENT + 2 * 86_400 * SEC  # a real jump: the file crosses a weekend
    clock.saw(_ts(weekend), WALL)
    assert clock.event == weekend  # the second record past the limit confirms the jump, the earlier of the two wins
    assert clock.suspect is None
    clock.saw(_ts(weekend + SEC, weekend + 3 * SEC), WALL)
    assert clock.event == weekend + 3 * SEC


def test_two_far_records_in_one_batch_move_the_clock_to_the_earlier():
    clock = FeedClock(wall_clocked=False, max_jump=600 * SEC)
    clock.saw(_ts(EVENT), WALL)
    clock.saw(_ts(EVENT + 7200 * SEC, EVENT + 7201 * SEC), WALL)
    assert clock.event == EVENT + 7200 * SEC and clock.held == 0
