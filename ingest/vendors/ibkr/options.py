"""``feeds[i].options`` of an ``ibkr`` feed: where TWS / IB Gateway listens, and what to request."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from streamctl.ingest.reconnect import ReconnectPolicy

__all__ = ["Options", "LOCAL_SYMBOL"]

LOCAL_SYMBOL = re.compile(r"^[A-Z0-9]{1,5}[FGHJKMNQUVXZ]\d{1,2}$")
"""A futures symbol naming one contract (root, CME month code, year digits: ``ESU4``, ``ESZ24``);
any other futures symbol is a root whose front month is chosen."""


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``feeds[i].options`` of an ``ibkr`` feed (the feed's `symbols` are tickers or futures roots)."""

    host: Annotated[str, Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 4001
    """4001/4002: IB Gateway live/paper; 7496/7497: TWS live/paper."""
    client_id: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 1
    """Unique among the API clients of one TWS; a second connection with it is refused (326)."""
    sec_type: Literal["FUT", "STK"] = "FUT"
    exchange: Annotated[str, Meta(min_length=1)] = "CME"
    """Futures: the listing exchange (CME, CBOT, NYMEX...); stocks: usually SMART."""
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] = "USD"
    expiry: Annotated[str, Meta(pattern=r"^\d{6}(\d{2})?$")] | None = None
    """Futures roots: the contract month ``YYYYMM`` (or last trade date) to take instead of the front month."""
    trades: bool = True
    """Tick-by-tick ``AllLast`` trades."""
    quotes: bool = True
    """Tick-by-tick ``BidAsk`` top of book."""
    depth_rows: Annotated[int, Meta(ge=0, le=100)] = 0
    """L2 rows per side (reqMktDepth); 0 = no depth. Each depth subscription uses one of the
    account's few depth lines (3 by default)."""
    smart_depth: bool = False
    """Aggregate depth over every exchange (SMART depth) instead of the listing exchange's."""
    max_messages_per_s: Annotated[int, Meta(ge=1, le=50)] = 45
    """Requests sent per second at most; TWS disconnects a client over 50 (error 100)."""
    probe_interval_s: Annotated[float, Meta(gt=0)] = 10.0
    """After this long without a byte, ask the gateway the time (the API has no heartbeat)."""
    liveness_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    """No byte for this long (probes unanswered) fails the session."""
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    """Bound on connecting, the handshake and startApi (until nextValidId)."""
    reconnect: ReconnectPolicy = ReconnectPolicy()

    def check(self) -> tuple[str, str, object] | None:
        if self.liveness_timeout_s <= self.probe_interval_s:
            return "liveness_timeout_s", f"must be > `probe_interval_s` ({self.probe_interval_s:g})", (
                self.liveness_timeout_s)
        if not (self.trades or self.quotes or self.depth_rows):
            return "trades", "must be true when `quotes` is false and `depth_rows` is 0 (nothing to request)", False
        if self.expiry is not None and self.sec_type != "FUT":
            return "expiry", "applies to futures only (`sec_type: FUT`)", self.expiry
        return None
