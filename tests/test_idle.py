"""The idle strategy of polling loops: short sleeps while work is near, longer once it is quiet.

No timed assertions: the strategy counts the sleep it asked for, so its steps are exact.
"""

from __future__ import annotations

import pytest

from streamctl.shm.idle import IdleStrategy


def _sleeps(idle: IdleStrategy, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(idle.current_sleep)
        idle.idle(False)
    return out


def test_idle_strategy_sleeps_longer_after_a_quiet_spell_and_resets_on_work():
    idle = IdleStrategy(spins=0, yields=0, min_sleep=1e-5, max_sleep=4e-5, deep_sleep=1.6e-4, deep_after=2e-4)
    # 1+2+4+4+4+4+4 = 23e-5 s asleep: past `deep_after`, the cap rises from 4e-5 to 1.6e-4.
    expected = [1e-5, 2e-5, 4e-5, 4e-5, 4e-5, 4e-5, 4e-5, 8e-5, 1.6e-4, 1.6e-4]
    assert _sleeps(idle, 10) == pytest.approx(expected)
    idle.idle(True)  # work: back to the short sleeps, and the quiet spell starts again
    assert _sleeps(idle, 10) == pytest.approx(expected)


def test_idle_strategy_without_deep_sleep_keeps_its_cap():
    idle = IdleStrategy(spins=0, yields=0, min_sleep=1e-5, max_sleep=4e-5, deep_after=1e-5)
    assert _sleeps(idle, 6)[-1] == pytest.approx(4e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_sleep": 1e-3, "deep_sleep": 1e-4}, "`deep_sleep` must be >= `max_sleep`"),
     ({"deep_after": 0}, "`deep_after` must be > 0, was 0")],
)
def test_idle_strategy_refuses_impossible_deep_settings(options, message):
    with pytest.raises(ValueError, match=message):
        IdleStrategy(**options)
