"""Free text from outside (a gateway's error, a file's symbol) made safe to show and to store.

A hostile gateway can put terminal escape sequences into an error text; written raw into a log,
an event or `status`, they would repaint or retitle the reader's terminal. `printable` escapes
every control character once, where such text enters a log line, an event or a status field.
`shorten` fits text into a fixed-size field without cutting a word in half.
"""

from __future__ import annotations

import re

__all__ = ["printable", "shorten", "ELLIPSIS"]

ELLIPSIS = "…"
"""Marks text that `shorten` cut."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    """`text` with every control character written as an escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_escape, text)


def shorten(text: str, size: int) -> str:
    """`text` cut to at most `size` UTF-8 bytes at a word boundary, marked with `ELLIPSIS`.

    A single word longer than the field is cut where it must be (still marked).
    """
    if len(text.encode("utf-8")) <= size:
        return text
    room = size - len(ELLIPSIS.encode("utf-8"))
    if room <= 0:
        raise ValueError(f"`size` must leave room for the ellipsis, was {size}")
    head = text.encode("utf-8")[: room + 1].decode("utf-8", "ignore")  # one char more: is the cut on a space?
    if head[-1:].isspace():
        kept = head.rstrip()
    else:
        kept = head[:-1]
        cut = kept.rfind(" ")
        if cut > 0:
            kept = kept[:cut]
    return kept.rstrip(" ,;:") + ELLIPSIS
