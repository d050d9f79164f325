"""Calculator settings: the ``calculators:`` section of a plant config.

They live with the calculators they configure, so a worker never reaches into the CLI to learn
its options; `streamctl.cli.config` composes them into the plant config. Every field is
documented in ``docs/calculators.md``.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["CalculatorsConfig", "BarsConfig", "VwapConfig", "ZScoreConfig", "IQRConfig", "AnomalyConfig",
           "BookConfig", "parse_interval"]

_POS_INT = Annotated[int, Meta(ge=1)]


class _Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every settings struct; each repeats ``frozen=True`` so type checkers see it frozen too."""


class BarsConfig(_Settings, frozen=True):
    time: list[str | int] = []
    """Time-bar intervals, whole seconds: ``1s``, ``60s``, ``5m``, ``1h`` or an int of seconds."""
    ticks: list[_POS_INT] = []
    """Tick bars: a bar every N trades."""
    volume: list[Annotated[float, Meta(gt=0)]] = []
    """Volume bars: a bar closes on the trade that brings its volume to >= V."""
    dollar: list[Annotated[float, Meta(gt=0)]] = []
    """Dollar bars: a bar closes on the trade that brings its notional to >= D."""
    close_delay: Annotated[float, Meta(ge=0)] = 0.25
    """Live: a time bar closes when its feed's clock passes its end plus this many seconds (the
    feed's latest event time, moved on by the wall clock only while a live feed is quiet)."""
    emit_empty: bool = False
    """Publish a bar for an interval without trades (flat at the previous close)."""
    max_empty_bars: Annotated[int, Meta(ge=0)] = 1000
    """With ``emit_empty``: most empty bars one gap emits per interval; the rest are counted
    (``empty_skipped``) and not published."""
    flush_on_stop: bool = True
    """On a clean stop, publish the bars still open (``ts_event`` shows how far they got)."""
    clock_max_jump: Annotated[float, Meta(gt=0)] = 600.0
    """Live: a record more than this many seconds past its feed's clock moves the clock only once
    a second record confirms it (one wild ``ts_event`` must not close every open bar)."""
    correction_window: Annotated[int, Meta(ge=0, le=1 << 24)] = 65536
    """Trades a worker keeps (all its symbols) so a vendor's correction or cancel can rebuild
    the time bars holding the trade (``revision`` > 0 if already published); 0 turns it off."""


class VwapConfig(_Settings, frozen=True):
    session_start: Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "00:00"
    """Time of day (HH:MM) at which the session VWAP resets."""
    timezone: str = "UTC"
    """IANA time zone of ``session_start``."""
    rolling_window: _POS_INT = 100
    """Rolling VWAP over the last N trades."""


class ZScoreConfig(_Settings, frozen=True):
    window: Annotated[int, Meta(ge=2)] = 100
    """Trades in the rolling mean and standard deviation of price (the tick itself excluded)."""
    threshold: Annotated[float, Meta(gt=0)] = 4.0


class IQRConfig(_Settings, frozen=True):
    """Tukey's fences: flag a trade outside ``[Q1 - k*IQR, Q3 + k*IQR]`` of the symbol's
    previous `window` trade prices (the trade itself excluded)."""

    window: Annotated[int, Meta(ge=2)] = 100
    """Trades whose quartiles (numpy's default, linear interpolation) make the fences."""
    k: Annotated[float, Meta(gt=0)] = 1.5
    """Fence distance in interquartile ranges (1.5: Tukey's outliers; 3: far out)."""


class AnomalyConfig(_Settings, frozen=True):
    zscore: ZScoreConfig | None = ZScoreConfig()
    jump_pct: Annotated[float, Meta(gt=0)] | None = 5.0
    """Flag a trade more than this many percent away from the symbol's previous trade."""
    crossed_quotes: bool = True
    """Flag quotes with bid > ask (crossed) or bid == ask (locked)."""
    iqr: IQRConfig | None = None
    """The IQR rule; off unless set (``iqr: {}`` takes the defaults)."""


class BookConfig(_Settings, frozen=True):
    depth: Annotated[int, Meta(ge=1, le=50)] = 10


class CalculatorsConfig(_Settings, frozen=True):
    bars: BarsConfig = BarsConfig()
    vwap: VwapConfig | None = VwapConfig()
    sma: list[_POS_INT] = []
    ema: list[_POS_INT] = []
    anomalies: AnomalyConfig | None = AnomalyConfig()
    book: BookConfig | None = BookConfig()

    def time_intervals(self) -> list[int]:
        """Time-bar intervals in seconds, in config order."""
        return [parse_interval(v) for v in self.bars.time]


_INTERVAL = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: str | int) -> int:
    """``"60s"``, ``"5m"``, ``"1h"`` or ``60`` -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number of seconds > 0")
    if isinstance(value, int):
        seconds = value
    else:
        match = _INTERVAL.match(value.strip())
        if not match:
            raise ValueError("must be a whole number of seconds > 0 (`60s`, `5m`, `1h` or an int)")
        seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be a whole number of seconds > 0")
    return seconds
