"""The text control phase of Databento's live subscription gateway (LSG), both directions.

Before the binary DBN stream starts, client and gateway exchange ``\\n``-terminated lines of
``key=value`` pairs joined by ``|``. The official client parses each line by trying message
types whose key sets must match exactly, so both our gateway (`venue`) and our client
(`session`) build and parse lines only through the Structs below, which
keep the gateway's field names and order. CRAM (challenge-response auth) lives here too.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeVar

import msgspec

__all__ = [
    "LSG_VERSION",
    "ALL_SYMBOLS",
    "SYMBOL_BATCH",
    "BUCKET_LENGTH",
    "ControlError",
    "Greeting",
    "Challenge",
    "AuthRequest",
    "AuthResponse",
    "SubscriptionRequest",
    "SessionStart",
    "LineBuffer",
    "cram_response",
    "check_cram",
    "subscription_requests",
    "encode_line",
    "decode_line",
    "gateway_host",
]

LSG_VERSION = "0.4.2"
"""The gateway version our venue announces."""
ALL_SYMBOLS = "ALL_SYMBOLS"
"""The symbol that subscribes every instrument of a schema."""
SYMBOL_BATCH = 500
"""Symbols per subscription line, as the official client batches them."""
BUCKET_LENGTH = 5
"""The last characters of an API key, sent in clear so the gateway can find the key."""
MAX_LINE = 1 << 20
"""Longest control line accepted (500 symbols of 71 characters fit easily)."""

_AUTH_RE = re.compile(r"^[0-9a-f]{64}-(.+)$")


class ControlError(ValueError):
    """A control line could not be parsed (or was too long)."""


class _Line(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class Greeting(_Line):
    """S->C on connect."""

    lsg_version: str


class Challenge(_Line):
    """S->C on connect, after the greeting."""

    cram: str


class AuthRequest(_Line):
    """C->S: the CRAM response and the session parameters."""

    auth: str
    dataset: str
    encoding: str = "dbn"
    details: str | None = None
    ts_out: str = "0"
    compression: str = "none"
    heartbeat_interval_s: int | None = None
    slow_reader_behavior: str | None = None
    client: str = "streamctl"


class AuthResponse(_Line):
    """S->C: ``success=1|session_id=N`` or ``success=0|error=...``."""

    success: str
    error: str | None = None
    session_id: str | None = None


class SubscriptionRequest(_Line):
    """C->S: one line per batch of at most 500 symbols."""

    schema: str
    stype_in: str
    symbols: str
    start: int | None = None
    snapshot: int = 0
    id: int | None = None
    is_last: int = 1


class SessionStart(_Line):
    """C->S: the last control line; binary DBN follows from the gateway."""

    start_session: str = "0"


_L = TypeVar("_L", bound=_Line)


def encode_line(message: _Line) -> bytes:
    """``key=value|...\\n`` in field order; None fields are left out."""
    parts = []
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if value is None:
            continue
        text = str(value)
        if "|" in text or "\n" in text:
            raise ControlError(f"`{name}` must not contain '|' or a newline, was {text!r}")
        parts.append(f"{name}={text}")
    return ("|".join(parts) + "\n").encode()


def decode_line(line: bytes | str, kind: type[_L]) -> _L:
    """Parse one control line as `kind`; unknown or missing keys raise `ControlError`."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.endswith("\n"):
        raise ControlError(f"control line must end with a newline, was {_preview(text)}")
    fields: dict[str, str] = {}
    for token in text.rstrip("\r\n").split("|"):
        key, eq, value = token.partition("=")
        if not eq:
            raise ControlError(f"control token `{_preview(token)}` has no '='")
        fields[key] = value
    try:
        return msgspec.convert(fields, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ControlError(f"not a {kind.__name__} line ({exc}): {_preview(text)}") from None


def _preview(text: str, limit: int = 120) -> str:
    text = text.rstrip("\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def cram_response(challenge: str, key: str) -> str:
    """The ``auth`` value: ``sha256(f"{challenge}|{key}")`` hex, ``-``, the key's bucket."""
    digest = hashlib.sha256(f"{challenge}|{key}".encode()).hexdigest()
    return f"{digest}-{key[-BUCKET_LENGTH:]}"


def check_cram(challenge: str, auth: str, key: str | None) -> str | None:
    """None if `auth` answers `challenge`, else the gateway's error text.

    With ``key=None`` (a venue without a configured key) any well-formed response is
    accepted: 64 hex digits, ``-``, and a bucket of `BUCKET_LENGTH` characters.
    """
    match = _AUTH_RE.match(auth)
    if match is None or len(match.group(1)) != BUCKET_LENGTH:
        return "Malformed authentication request"
    if key is None:
        return None
    if match.group(1) != key[-BUCKET_LENGTH:] or auth != cram_response(challenge, key):
        return "Authentication failed."
    return None


def subscription_requests(
    schema: str,
    symbols: list[str],
    *,
    stype_in: str = "raw_symbol",
    start: int | None = None,
    snapshot: bool = False,
    sub_id: int | None = None,
) -> list[SubscriptionRequest]:
    """The lines for one subscription: `SYMBOL_BATCH` symbols each, ``is_last`` on the last."""
    if not symbols:
        raise ControlError(f"`symbols` must not be empty for schema `{schema}`")
    batches = [symbols[i : i + SYMBOL_BATCH] for i in range(0, len(symbols), SYMBOL_BATCH)]
    return [
        SubscriptionRequest(
            schema=schema,
            stype_in=stype_in,
            symbols=",".join(batch),
            start=start,
            snapshot=int(snapshot),
            id=sub_id,
            is_last=int(i == len(batches) - 1),
        )
        for i, batch in enumerate(batches)
    ]


def gateway_host(dataset: str) -> str:
    """The vendor's live host of `dataset`: ``GLBX.MDP3`` -> ``glbx-mdp3.lsg.databento.com``."""
    return f"{dataset.lower().replace('.', '-')}.lsg.databento.com"


class LineBuffer:
    """Splits received bytes into control lines; what follows them stays in `rest`."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
            raise ControlError(f"control line longer than {MAX_LINE} bytes")

    def next_line(self) -> bytes | None:
        """The next complete line (with its newline), or None."""
        end = self._buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    def rest(self) -> bytes:
        """Bytes after the last line taken; empties the buffer."""
        data = bytes(self._buf)
        self._buf.clear()
        return data
