"""Failures the local venue can be told to cause: ``--inject WHAT@N`` fires once, before the
venue's stream sends data message number N (0-based, over the whole stream, any connection).

| WHAT | what the client sees |
|---|---|
| ``disconnect`` | the connection closes (code 1011) |
| ``silence`` | nothing more, not even pongs: the peer stops answering |
| ``malformed`` | a frame that is neither MessagePack nor JSON |
| ``unknown`` | a message of a type Alpaca does not have (``T: "zz"``) |
| ``badfield`` | a trade whose price is a string |
| ``oversized`` | a 16 MiB frame |
| ``error:CODE`` | an error message with that code (and Alpaca's text), then, for codes that end
  a connection, the close |
| ``correct:M`` | a correction of the trade that was message M: price + 1 %, a new id |
| ``cancel:M`` | a cancel of the trade that was message M |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamctl.ingest.vendors.alpaca.codes import CODES

__all__ = ["Injection", "parse_injection", "KINDS"]

KINDS = ("disconnect", "silence", "malformed", "unknown", "badfield", "oversized", "error", "correct", "cancel")
_PATTERN = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<arg>\d+))?@(?P<at>\d+)$")


@dataclass(frozen=True)
class Injection:
    kind: str
    at: int
    """Fires before data message number `at` of the stream."""
    arg: int = 0
    """The error code (``error``) or the target message (``correct``, ``cancel``)."""


def parse_injection(text: str) -> Injection:
    """``WHAT[:ARG]@N``; a bad one raises ValueError naming it."""
    match = _PATTERN.match(text.strip())
    if match is None or match["kind"] not in KINDS:
        raise ValueError(f"`--inject` must be WHAT[:ARG]@N with WHAT one of {', '.join(KINDS)}; was {text!r}")
    kind, arg = match["kind"], match["arg"]
    needs_arg = kind in ("error", "correct", "cancel")
    if needs_arg != (arg is not None):
        raise ValueError(f"`--inject {kind}` {'needs' if needs_arg else 'takes no'} `:ARG`; was {text!r}")
    value = int(arg or 0)
    if kind == "error" and value not in CODES:
        raise ValueError(f"`--inject error:CODE` must use a documented code ({', '.join(map(str, CODES))}); was {value}")
    if kind in ("correct", "cancel") and value >= int(match["at"]):
        raise ValueError(f"`--inject {kind}:M@N` must correct a message already sent (M < N); was {text!r}")
    return Injection(kind, int(match["at"]), value)
