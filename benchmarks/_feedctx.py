"""A FeedContext for benchmarks: dense instrument ids from 1, every counter, event, progress and heartbeat dropped."""

from __future__ import annotations

__all__ = ["QuietCtx"]


class QuietCtx:
    """What a vendor session needs from the feed loop, at no cost to the measurement."""

    feed_name = "bench"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids) + 1)  # 0 is "filtered out" to a replay

    def count(self, cause: str, n: int = 1) -> None:
        pass

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        pass

    def progress(self, done: float, total: float) -> None:
        pass

    def heartbeat(self) -> None:
        pass
