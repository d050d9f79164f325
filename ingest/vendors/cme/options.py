"""``feeds[i].options`` of a ``cme`` feed: one MDP 3.0 channel's multicast groups and its handling."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from streamctl.ingest.reconnect import ReconnectPolicy

__all__ = ["Options", "Group"]

_IPV4 = r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"


class Group(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One multicast feed: ``{group: 224.0.31.1, port: 14310}``."""

    group: Annotated[str, Meta(pattern=_IPV4)]
    port: Annotated[int, Meta(ge=1, le=65535)]

    def bad(self) -> str | None:
        try:
            if not ipaddress.IPv4Address(self.group).is_multicast:
                return "must be a multicast address (224.0.0.0/4)"
        except ValueError as exc:
            return str(exc)
        return None


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``feeds[i].options`` of a ``cme`` feed (one channel; run one feed per channel)."""

    incremental_a: Group
    incremental_b: Group | None = None
    """Feed B of the incremental stream; arbitration takes the first copy of each packet."""
    definition: Group
    """The instrument definition loop (54/55/56), read at start to map symbols to SecurityIDs."""
    recovery_a: Group
    """The Market Recovery (snapshot) loop, joined only while recovering."""
    recovery_b: Group | None = None
    interface: Annotated[str, Meta(pattern=_IPV4)] = "127.0.0.1"
    """IPv4 address of the interface the groups are joined on."""
    schema: str | None = None
    """The SBE schema XML; default the bundled CME schema (id 1, version 9)."""
    depth: Annotated[int, Meta(ge=1, le=10)] = 10
    """Book depth of the channel's MBP feed (levels pushed past it are gone)."""
    implied: Literal["separate", "merge"] = "separate"
    """``separate``: implied levels are tracked but not published; ``merge``: a price's size is
    outright plus implied."""
    book: Literal["mbp", "mbo"] = "mbp"
    """Where published books come from: ``mbp`` the price levels (46), ``mbo`` the orders (47 and
    46's order entries), recovered from SnapshotFullRefreshOrderBook53."""
    gap_timeout_ms: Annotated[float, Meta(gt=0)] = 50.0
    """How long a missing packet may stay missing on both feeds before it is a gap."""
    max_pending: Annotated[int, Meta(ge=1)] = 1024
    """Packets held past a missing one before it is a gap, whatever the time."""
    definition_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    """Bound on finding every configured symbol in the definition loop."""
    recv_buffer: Annotated[int, Meta(ge=65536)] = 4 << 20
    """SO_RCVBUF of each socket (capped by the kernel's ``net.core.rmem_max``)."""
    reconnect: ReconnectPolicy = ReconnectPolicy()

    def check(self) -> tuple[str, str, object] | None:
        for name in ("incremental_a", "incremental_b", "definition", "recovery_a", "recovery_b"):
            group = getattr(self, name)
            if group is not None and (why := group.bad()):
                return f"{name}.group", why, group.group
        if self.schema is not None and not os.path.isfile(self.schema):
            return "schema", "does not exist", self.schema
        return None
