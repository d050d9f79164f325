"""What every ``streamctl venue <name>`` command shares: its ``--speed`` value and serving until
SIGINT or SIGTERM. (A vendor never imports another vendor, so the shared part lives here.)"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Literal

import click

__all__ = ["parse_speed", "serve_until_signal"]


def parse_speed(value: str) -> Literal["max"] | float:
    """``max`` or a factor of real time > 0; anything else is a click error naming ``--speed``."""
    if value == "max":
        return "max"
    try:
        pace = float(value)
    except ValueError:
        pace = 0.0
    if not pace > 0:
        raise click.BadParameter(f"must be `max` or a number > 0; was {value}", param_hint="--speed")
    return pace


def serve_until_signal(stop: Callable[[], None]) -> None:
    """Block until SIGINT or SIGTERM, then call `stop` (the venue is already serving)."""
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.2):
            pass
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
