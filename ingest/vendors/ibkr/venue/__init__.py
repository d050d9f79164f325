"""A local TWS / IB Gateway that serves recorded files over the real API socket protocol.

``streamctl venue ibkr --port 4002 --data FILE...`` lets the plant, and the ``ib_async``
client, run against recorded market data without an account: the handshake and startApi as
TWS answers them, contract details for the files' symbols, tick-by-tick trades and quotes and
L2 depth paced by ``ts_event``, and injected failures (a disconnect, silence, a competing
session, a connectivity outage, symbols without a market-data subscription).

Parts: `tape` (files -> records and contracts), `streams` (one subscription's messages),
`connection` (one client), `server` (the listener), `command` (the CLI entry).
"""

from streamctl.ingest.vendors.ibkr.venue.command import command
from streamctl.ingest.vendors.ibkr.venue.connection import Failure
from streamctl.ingest.vendors.ibkr.venue.server import IbkrVenue
from streamctl.ingest.vendors.ibkr.venue.tape import Tape, load_tape

__all__ = ["Failure", "IbkrVenue", "Tape", "command", "load_tape"]
