"""``feeds[i].options`` of a ``sim`` feed: rates, prices, the event mix and the clock."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["Options"]

_DEFAULT_START_NS = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z


class Options(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    rate: Annotated[float, Meta(gt=0)] | Literal["max"] = 200.0
    """Events per second per symbol, or ``max`` (as fast as the ring takes them)."""
    seed: int = 42
    prices: dict[str, Annotated[float, Meta(gt=0)]] = {}
    """Start price per symbol; symbols not listed start at ``start_price``."""
    start_price: Annotated[float, Meta(gt=0)] = 100.0
    step_bps: Annotated[float, Meta(ge=0)] = 1.0
    """Standard deviation of one event's log-price step, in basis points."""
    tick_size: Annotated[float, Meta(gt=0)] = 0.01
    trade_share: Annotated[float, Meta(ge=0, le=1)] = 0.4
    quote_share: Annotated[float, Meta(ge=0, le=1)] = 0.4
    """The rest of the events are book updates."""
    max_size: Annotated[int, Meta(ge=1)] = 500
    """Trade and level sizes are uniform in 1..max_size."""
    jump_prob: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """Probability that an event's step is a jump of ``jump_bps`` (to exercise anomaly rules)."""
    jump_bps: Annotated[float, Meta(ge=0)] = 800.0
    batch: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096
    """Most events handed to the ring at once."""
    slice_ms: Annotated[float, Meta(ge=0, le=1000)] = 1.0
    """``clock: wall``: events due are handed over together at most once per slice, as a live
    gateway delivers what arrived meanwhile; 0 hands each event over the moment it is due (one
    wake-up per event, which at 100 k events/s is the feed's whole CPU)."""
    clock: Literal["wall", "simulated"] = "wall"
    """``wall``: events are stamped with the current time as they are paced out. ``simulated``:
    event time advances by 1/rate per event (from ``start_ns``) and nothing waits."""
    start_ns: int = _DEFAULT_START_NS

    def event_time_is_now(self) -> bool:
        """``clock: wall`` stamps events as they are paced out; ``simulated`` runs its own time."""
        return self.clock == "wall"

    def check(self) -> tuple[str, str, object] | None:
        if self.trade_share + self.quote_share > 1:
            return "trade_share", "plus `quote_share` must be <= 1", self.trade_share
        if self.clock == "simulated" and self.rate == "max":
            return "rate", "must be a number when `clock` is simulated", self.rate
        return None
