"""Interactive Brokers: the TWS / IB Gateway API socket protocol (contracts, tick-by-tick, depth)."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.ibkr.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="ibkr",
    options=Options,
    session="streamctl.ingest.vendors.ibkr.session:Session",
    parser="streamctl.ingest.vendors.ibkr.parsing:MarketData",
    venue="streamctl.ingest.vendors.ibkr.venue:command",
    needs_symbols=True,
    live=True,
    docs="docs/ibkr.md",
    warm_up="streamctl.ingest.vendors.ibkr.kernels:warm_up",
)
