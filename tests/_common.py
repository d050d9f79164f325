"""Helpers every kind of test uses: a free loopback port and the one bounded wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["free_port", "wait_until"]

_T = TypeVar("_T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], _T],
    timeout: float = 10.0,
    what: str = "condition",
    step: Callable[[], object] | None = None,
    *,
    interval: float = 0.05,
) -> _T:
    """Poll `condition` until it returns something truthy and return that; fail after `timeout` s.

    Between polls it calls `step` (e.g. a socket poll that itself blocks a little) or, without
    one, sleeps from 1 ms up to `interval`, so a quick condition is seen quickly and a slow one
    does not spin on two shared cores.
    """
    deadline = time.monotonic() + timeout
    delay = min(0.001, interval)
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(delay)
            delay = min(delay * 2, interval)
    return value
