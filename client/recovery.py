"""The subscriber's side of the plant's recovery service (`streamctl.bus.recovery`).

`History` asks for what a `Subscriber` missed (a seq gap), for where it starts (``since``) and
for the current state (``last``), page by page, and hands back ``(topic, first seq, last seq,
payload bytes)`` in order. A service that does not answer is said once, and asked no more: the
subscriber then reports gaps as it did without one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import zmq

from streamctl.bus.curve import CurveClient
from streamctl.bus.recovery import ask

__all__ = ["History", "Stored"]

_log = logging.getLogger("streamctl.client")

Stored = tuple[str, int, int, bytes]
"""A message as the service returns it: topic, first seq, last seq, payload (as published)."""


class History:
    """One recovery endpoint, asked with the subscriber's context and keys."""

    def __init__(self, endpoint: str, *, context: zmq.Context, curve: CurveClient | None, timeout: float):
        self.endpoint = endpoint
        self._context = context
        self._curve = curve
        self._timeout = timeout
        self.available = True
        """False once the service failed to answer (it is not asked again)."""

    def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if not self.available:
            return None
        reply = ask(self.endpoint, request, timeout=self._timeout, curve=self._curve, context=self._context)
        if reply is None or not reply.get("ok"):
            self.available = False
            why = "no answer" if reply is None else reply.get("error")
            _log.warning("recovery service at `%s`: %s; gaps are reported, not filled", self.endpoint, why)
            return None
        return reply

    def between(self, topic: str, first: int, before: int) -> tuple[list[Stored], bool]:
        """The messages of `topic` from seq `first` up to (not including) `before`, and whether
        they are all there (False: the service no longer holds the start, or is not there)."""
        found: list[Stored] = []
        want = first
        while want < before:
            reply = self._ask({"op": "history", "topic": topic, "from_seq": want})
            if reply is None:
                return found, False
            page = [m for m in map(_stored, reply["messages"]) if m[1] >= want and m[2] < before]
            if not page or page[0][1] != want:  # the service no longer holds `want`
                return found, False
            found += page
            want = page[-1][2] + 1
            if not reply["more"]:
                break
        return found, want >= before

    def since(self, pattern: str, since_ns: int) -> Iterator[list[Stored]]:
        """Every message held on topics matching `pattern` that reached the hub at or after
        `since_ns` (wall ns), in the order the hub forwarded them, page by page (each page is
        dispatched before the next is asked for, so a long history never sits in memory)."""
        while True:
            reply = self._ask({"op": "history", "pattern": pattern, "since_ns": since_ns})
            if reply is None:
                return
            yield [_stored(m) for m in reply["messages"]]
            if not reply["more"] or "next_ns" not in reply:
                return
            since_ns = int(reply["next_ns"])

    def after(self, topic: str, seq: int, through: int | None = None) -> tuple[list[Stored], bool]:
        """The messages of `topic` holding a seq after `seq` (up to `through`, when given), page
        by page, and whether the service still held seq+1."""
        found: list[Stored] = []
        want = seq + 1
        complete: bool | None = None  # what the first reply says
        while through is None or want <= through:
            reply = self._ask({"op": "history", "topic": topic, "from_seq": want})
            if reply is None:
                return found, False
            if complete is None:
                complete = bool(reply["complete"])
            page = [m for m in map(_stored, reply["messages"]) if m[2] >= want and (through is None or m[1] <= through)]
            found += page
            if not reply["more"] or not page:
                break
            want = page[-1][2] + 1
        return found, complete is not False

    def last(self, pattern: str) -> list[Stored]:
        """The last message of every topic matching `pattern`."""
        reply = self._ask({"op": "last", "pattern": pattern})
        return [] if reply is None else [_stored(m) for m in reply["messages"]]


def _stored(message: list[Any]) -> Stored:
    topic, first, last, payload = message
    return str(topic), int(first), int(last), bytes(payload)

