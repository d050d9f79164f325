"""A local Databento live gateway (LSG) that serves recorded DBN files over the real protocol.

``streamctl venue databento --port 13555 --data FILE...`` lets the plant, and Databento's
own ``databento.Live`` client, run against real market data without an account or network.
It speaks the control phase exactly as the official client expects (greeting, CRAM,
``success=1|session_id=N``, subscription lines, ``start_session``), then writes a live-style
DBN stream: Metadata (the served files' DBN version, schema mixed, no symbols), one
SymbolMappingMsg per instrument per subscription, a subscription-ack SystemMsg, the
matching records of the files in the files' own bytes, and heartbeat SystemMsgs when idle.

Records are paced by ``ts_event`` (the running maximum, so out-of-order stamps never wait
backwards; a gap longer than ``max_gap`` seconds of data time is shortened to it) at
``speed`` x real time, or sent at full speed with ``speed="max"``. When the data is done the
session stays open with heartbeats like a real gateway, unless ``loop`` (serve the files
again) or ``close_at_end`` (close the connection, as Databento's mock gateway does).

Parts: `files` (DBN files cut into record frames, merged per dataset), `subscriptions` (what a
subscription resolves to and the records that answer it), `connection` (one client: control
phase and stream), `server` (the listener and its threads), `command` (the CLI entry).
"""

from streamctl.ingest.vendors.databento.venue.command import command, main_serve
from streamctl.ingest.vendors.databento.venue.files import VenueFile, load_venue_file
from streamctl.ingest.vendors.databento.venue.server import DatabentoVenue

__all__ = ["DatabentoVenue", "VenueFile", "command", "load_venue_file", "main_serve"]
