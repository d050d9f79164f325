"""Helpers of the CME tests: a synthetic channel on groups of its own, and its options."""

from __future__ import annotations

import random

from _databento import Ctx

from streamctl.ingest.vendors.cme.options import Group, Options

__all__ = ["channel_feeds", "options_for", "CmeCtx"]


class CmeCtx(Ctx):
    """The recording context with ids dense from 1, as the feed's registry gives them (0 = none)."""

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids) + 1)


def channel_feeds() -> dict[str, tuple[str, int]]:
    """Multicast groups no other test run uses (a random last octet and port block)."""
    rng = random.SystemRandom()
    octet, port = rng.randint(10, 250), rng.randrange(20000, 60000, 10)
    return {"incremental_a": (f"224.0.31.{octet}", port), "incremental_b": (f"224.0.32.{octet}", port + 1),
            "definition_a": (f"224.0.31.{octet}", port + 2), "recovery_a": (f"224.0.31.{octet}", port + 3),
            "recovery_b": (f"224.0.32.{octet}", port + 4)}


def options_for(feeds: dict[str, tuple[str, int]], **overrides) -> Options:
    def g(name: str) -> Group:
        return Group(group=feeds[name][0], port=feeds[name][1])

    return Options(incremental_a=g("incremental_a"), incremental_b=g("incremental_b"), definition=g("definition_a"),
                   recovery_a=g("recovery_a"), recovery_b=g("recovery_b"), **overrides)
