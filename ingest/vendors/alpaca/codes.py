"""Alpaca's stream error codes: what each means and whether trying again can help.

Codes and texts are those of Alpaca's market-data stream (its documentation's error table and
the Go SDK's ``marketdata/stream/errors.go``). A code that cannot be fixed by reconnecting
(bad keys, a plan without this feed, too many symbols) fails the feed with the vendor's reason;
the others are reported and the plant's one reconnect policy tries again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ErrorCode", "CODES", "describe"]


@dataclass(frozen=True)
class ErrorCode:
    code: int
    msg: str
    """The text Alpaca sends with the code."""
    retry: bool
    """Whether a new connection may succeed where this one failed."""
    meaning: str
    """What it means for the feed, in the plant's words."""


CODES: dict[int, ErrorCode] = {c.code: c for c in (
    ErrorCode(400, "invalid syntax", False, "the stream refused our message as malformed (a bug: report it)"),
    ErrorCode(401, "not authenticated", True, "a message was sent before authentication completed"),
    ErrorCode(402, "auth failed", False, "the key or secret is wrong"),
    ErrorCode(403, "already authenticated", True, "a second auth message on one connection"),
    ErrorCode(404, "auth timeout", True, "authentication did not arrive within the stream's time limit"),
    ErrorCode(405, "symbol limit exceeded", False, "the plan allows fewer symbols than the feed lists"),
    ErrorCode(406, "connection limit exceeded", False,
              "another connection with these keys is open on this endpoint (most plans allow one)"),
    ErrorCode(407, "slow client", True, "the stream dropped us for reading too slowly"),
    ErrorCode(409, "insufficient subscription", False, "the plan does not include this feed"),
    ErrorCode(410, "invalid subscribe action for this feed", False,
              "a channel this feed does not have (e.g. quotes conditions on crypto)"),
    ErrorCode(411, "insufficient scope", False, "the keys lack the market-data scope"),
    ErrorCode(500, "internal error", True, "Alpaca's stream failed; it may work on a new connection"),
)}
"""Every documented code."""


def describe(code: int, msg: str) -> tuple[str, bool]:
    """(a line for the event, whether to retry) for an error frame; an unknown code is retried."""
    known = CODES.get(code)
    if known is None:
        return f"Alpaca error {code} `{msg}` (an undocumented code; retrying)", True
    return f"Alpaca error {code} `{msg}`: {known.meaning}", known.retry
