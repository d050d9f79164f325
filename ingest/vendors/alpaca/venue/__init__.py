"""A local Alpaca market-data stream serving recorded files over the real protocol.

``streamctl venue alpaca --port 8765 --data FILE...`` lets the plant, and Alpaca's own
``alpaca-py`` streams (``url_override="ws://127.0.0.1:8765/v2/iex"``), run on recorded
ticks without an account. Parts: `stream` (files to pre-encoded messages, minute bars made
from the trades), `injection` (``--inject WHAT@N`` failures), `connection` (one client:
handshake, subscriptions, paced stream), `server` (the asyncio server in its thread),
`command` (the CLI entry).
"""

from streamctl.ingest.vendors.alpaca.venue.command import command
from streamctl.ingest.vendors.alpaca.venue.injection import Injection, parse_injection
from streamctl.ingest.vendors.alpaca.venue.server import AlpacaVenue

__all__ = ["AlpacaVenue", "Injection", "command", "parse_injection"]
