"""The TWS / IB Gateway API socket protocol: framing, the handshake, message ids and codes.

Both directions carry frames of a 4-byte big-endian length and a payload of ASCII fields, each
ended by a NUL byte; every field is text and its type is given by its position. The client
opens with ``b"API\\0"`` and a framed version range ``v<min>..<max>``; the server answers with a
frame of exactly two fields, ``[serverVersion, connectionTime]``, and the client then sends
startApi. Field layouts depend on the negotiated server version; the few that differ between
the versions this package speaks (`MIN_VERSION`..`MAX_VERSION`) are noted where they are built
or read. Shared by the session and the local venue, so both speak one definition.
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "API_PREFIX",
    "MIN_VERSION",
    "MAX_VERSION",
    "MAX_FRAME",
    "VERSION_ERROR_JSON",
    "VERSION_ISSUER_ID",
    "In",
    "Out",
    "Code",
    "FrameError",
    "FrameReader",
    "frame",
    "encode",
    "handshake",
    "parse_version_range",
]

API_PREFIX = b"API\0"
MIN_VERSION = 164
"""Oldest server version we accept: from 164 on, contract details carry no version field and
end with the size rules (min size, size increment, suggested increment)."""
MAX_VERSION = 178
"""Newest server version whose layouts we read (the official ``ib_async`` 2.1 stops here too)."""
VERSION_ERROR_JSON = 166
"""From this server version an error message ends with an ``advancedOrderRejectJson`` field."""
VERSION_ISSUER_ID = 176
"""From this server version reqContractDetails ends with an ``issuerId`` field."""
MAX_FRAME = 0xFFFFFF
"""Largest payload a frame may announce (TWS's own limit, 16 MiB - 1); more is a corrupt stream."""

_LENGTH = struct.Struct(">I")


class In(enum.IntEnum):
    """Message ids the server sends (the first field of every server frame)."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ERROR = 4
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MARKET_DEPTH = 12
    MARKET_DEPTH_L2 = 13
    MANAGED_ACCOUNTS = 15
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCOUNT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    MARKET_DATA_TYPE = 58
    POSITION_END = 62
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    TICK_BY_TICK = 99
    COMPLETED_ORDERS_END = 102


class Out(enum.IntEnum):
    """Message ids the client sends."""

    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_CONTRACT_DATA = 9
    REQ_MKT_DEPTH = 10
    CANCEL_MKT_DEPTH = 11
    REQ_CURRENT_TIME = 49
    REQ_POSITIONS = 61
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    REQ_TICK_BY_TICK_DATA = 97
    CANCEL_TICK_BY_TICK_DATA = 98
    REQ_COMPLETED_ORDERS = 99


class Code(enum.IntEnum):
    """Error and notice codes the plant acts on (``error`` messages, id 4)."""

    NO_SECURITY_DEFINITION = 200
    MAX_RATE_EXCEEDED = 100
    CLIENT_ID_IN_USE = 326
    NOT_SUBSCRIBED = 354
    CONNECTIVITY_LOST = 1100
    RESTORED_DATA_LOST = 1101
    RESTORED_DATA_KEPT = 1102
    FARM_OK = 2104
    HMDS_OK = 2106
    SECDEF_OK = 2158
    NEEDS_SUBSCRIPTION = 10089
    COMPETING_SESSION = 10197


class FrameError(ValueError):
    """The byte stream cannot be framed (an announced length over `MAX_FRAME`)."""


def frame(payload: bytes) -> bytes:
    """`payload` with its 4-byte big-endian length in front."""
    return _LENGTH.pack(len(payload)) + payload


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def encode(*fields: object) -> bytes:
    """One framed message: every field as text, NUL-terminated (None is an empty field, a bool 1/0)."""
    return frame("".join(_text(f) + "\0" for f in fields).encode("ascii", "backslashreplace"))


def handshake(min_version: int = MIN_VERSION, max_version: int = MAX_VERSION) -> bytes:
    """The client's first bytes: ``API\\0`` and the framed version range."""
    return API_PREFIX + frame(f"v{min_version}..{max_version}".encode("ascii"))


def parse_version_range(text: bytes) -> tuple[int, int]:
    """``b"v157..178"`` (with optional `` +OPTS``) -> (157, 178); ValueError if it is not one."""
    head = text.split(b" ", 1)[0].decode("ascii")
    if not head.startswith("v"):
        raise ValueError(f"version range must start with `v`, was {head!r}")
    low, sep, high = head[1:].partition("..")
    return (int(low), int(high)) if sep else (int(low), int(low))


class FrameReader:
    """Cuts a byte stream into frames' field lists; keeps an incomplete frame for the next `feed`."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def rest(self) -> bytes:
        """The bytes of frames not yet complete, handed over (the reader is empty afterwards)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)

    def messages(self) -> list[list[bytes]]:
        """Every complete frame received so far, as its list of fields (the trailing NUL dropped).

        Raises `FrameError` on a length over `MAX_FRAME`: the stream cannot be resynchronised.
        """
        data = bytes(self._buf)  # one copy; each frame is then sliced from it once
        pos, end = 0, len(data)
        out: list[list[bytes]] = []
        unpack = _LENGTH.unpack_from
        while end - pos >= 4:
            (n,) = unpack(data, pos)
            if n > MAX_FRAME:
                raise FrameError(f"frame announces {n} bytes, over the {MAX_FRAME} limit")
            if end - pos - 4 < n:
                break
            body = data[pos + 4 : pos + 4 + n]
            out.append((body[:-1] if body.endswith(b"\0") else body).split(b"\0") if n else [])
            pos += 4 + n
        if pos:
            del self._buf[:pos]
        return out
