"""``feeds[i].options`` of an ``alpaca`` feed. The key and secret never leave this struct in clear."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from streamctl.ingest.reconnect import ReconnectPolicy

__all__ = ["Options", "STREAM_PATHS"]

STREAM_PATHS = {
    "iex": "/v2/iex",
    "sip": "/v2/sip",
    "delayed_sip": "/v2/delayed_sip",
    "crypto": "/v1beta3/crypto/us",
}
"""The path of each feed on Alpaca's market-data stream host."""
_HOST = "wss://stream.data.alpaca.markets"


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``feeds[i].options`` of an ``alpaca`` feed."""

    feed: Literal["iex", "sip", "delayed_sip", "crypto"] = "iex"
    """Stocks v2 ``iex`` (free), ``sip``, ``delayed_sip`` (15 min behind), or ``crypto`` (v1beta3, US)."""
    key: Annotated[str, Meta(min_length=1)]
    """API key id (``${APCA_API_KEY_ID}`` in the YAML)."""
    secret: Annotated[str, Meta(min_length=1)]
    """API secret (``${APCA_API_SECRET_KEY}``); sent in the auth message only."""
    url: Annotated[str, Meta(pattern=r"^wss?://[^/\s]+(/\S*)?$")] | None = None
    """Stream host, ``ws://127.0.0.1:PORT`` for a local venue (a path in it replaces the feed's
    path); default Alpaca's ``wss://stream.data.alpaca.markets``."""
    channels: Annotated[list[Literal["trades", "quotes"]], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["trades", "quotes"]
    )
    """What to subscribe for every symbol. Corrections and cancels come with ``trades``."""
    encoding: Literal["msgpack", "json"] = "msgpack"
    """Frame encoding asked for at the handshake (msgpack is what the official SDKs use)."""
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    """Bound on connecting, authenticating and the subscription answer."""
    ping_interval_s: Annotated[float, Meta(gt=0)] = 10.0
    """WebSocket ping period; a quiet market is not a dead connection, an unanswered ping is."""
    ping_timeout_s: Annotated[float, Meta(gt=0)] = 20.0
    """No pong for this long fails the session (the peer stopped answering)."""
    max_frame_bytes: Annotated[int, Meta(ge=1024)] = 4 << 20
    """A larger frame is refused: the connection is dropped and counted as malformed."""
    reconnect: ReconnectPolicy = ReconnectPolicy()

    def endpoint(self) -> str:
        """The WebSocket URL of this feed."""
        if self.url is None:
            return _HOST + STREAM_PATHS[self.feed]
        scheme, _, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host}{'/' + path if slash and path else STREAM_PATHS[self.feed]}"

    def event_time_is_now(self) -> bool:
        """The delayed SIP feed stamps trades 15 minutes ago: its quiet spells do not move its clock."""
        return self.feed != "delayed_sip"

    def __repr__(self) -> str:
        return f"Options(feed={self.feed!r}, endpoint={self.endpoint()!r}, channels={self.channels!r})"

    __str__ = __repr__
