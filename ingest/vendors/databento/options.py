"""``feeds[i].options`` of a ``databento`` feed. The API key never leaves this struct in clear."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from streamctl.bus.retry import ReconnectPolicy
from streamctl.ingest.vendors.databento import protocol as lsg

__all__ = ["Options"]


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``feeds[i].options`` of a ``databento`` feed."""

    dataset: Annotated[str, Meta(min_length=1, pattern=r"^[A-Z0-9]+\.[A-Z0-9]+$")]
    """Databento dataset code, e.g. ``GLBX.MDP3``."""
    schemas: Annotated[list[Literal["trades", "mbp-1", "tbbo", "mbo"]], Meta(min_length=1)]
    """Schemas to subscribe, each for every symbol of the feed."""
    key: str
    """API key (``${DATABENTO_API_KEY}`` in the YAML). Only its CRAM hash leaves the process."""
    stype_in: Literal["raw_symbol", "instrument_id", "parent", "continuous"] = "raw_symbol"
    gateway: str | None = None
    """Gateway host; default the vendor's host of `dataset` (``glbx-mdp3.lsg.databento.com``)."""
    port: Annotated[int, Meta(ge=1, le=65535)] = 13000
    heartbeat_interval_s: Annotated[int, Meta(ge=1)] = 30
    """Heartbeat interval the gateway is asked for."""
    liveness_timeout_s: Annotated[float, Meta(gt=0)] | None = None
    """No byte for this long fails the session; default ``heartbeat_interval_s + 10``."""
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    """Bound on connecting and on the whole control phase (auth and subscriptions)."""
    reconnect: ReconnectPolicy = ReconnectPolicy()
    resume: bool = True
    """After a lost connection or a feed restart, subscribe with ``start`` = the last delivered
    ``ts_event`` (intraday replay) and drop what was already delivered: no gap, no duplicate.
    False: subscribe from now, as a fresh session (what the gap held is lost)."""

    def check(self) -> tuple[str, str, object] | None:
        if len(self.key.strip()) < lsg.BUCKET_LENGTH:
            return "key", f"must be an API key of at least {lsg.BUCKET_LENGTH} characters", "<hidden>"
        if self.liveness_timeout_s is not None and self.liveness_timeout_s <= self.heartbeat_interval_s:
            return "liveness_timeout_s", f"must be > `heartbeat_interval_s` ({self.heartbeat_interval_s})", (
                self.liveness_timeout_s
            )
        return None

    @property
    def host(self) -> str:
        return self.gateway or lsg.gateway_host(self.dataset)

    @property
    def liveness(self) -> float:
        return self.liveness_timeout_s if self.liveness_timeout_s is not None else self.heartbeat_interval_s + 10.0

    def __repr__(self) -> str:
        return f"Options(dataset={self.dataset!r}, schemas={self.schemas!r}, host={self.host!r}, port={self.port})"

    __str__ = __repr__
