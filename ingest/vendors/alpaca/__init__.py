"""Alpaca market data: the stocks (v2: iex, sip, delayed_sip) and crypto (v1beta3) WebSocket streams."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.alpaca.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="alpaca",
    options=Options,
    session="streamctl.ingest.vendors.alpaca.session:Session",
    parser="streamctl.ingest.vendors.alpaca.parsing:FrameDecoder",
    venue="streamctl.ingest.vendors.alpaca.venue:command",
    needs_symbols=True,
    live=True,
    docs="docs/alpaca.md",
)
