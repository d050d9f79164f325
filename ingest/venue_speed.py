"""The ``--speed`` option every local venue takes: ``max`` or a multiple of real time."""

from __future__ import annotations

from typing import Literal

import click

__all__ = ["parse_speed"]


def parse_speed(speed: str) -> Literal["max"] | float:
    """``max``, or a number > 0; anything else is refused naming ``--speed`` and the value."""
    if speed == "max":
        return "max"
    try:
        pace = float(speed)
    except ValueError:
        pace = 0.0
    if not pace > 0:
        raise click.BadParameter(f"must be `max` or a number > 0; was {speed}", param_hint="--speed")
    return pace
