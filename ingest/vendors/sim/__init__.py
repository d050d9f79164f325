"""The built-in simulator: a market to start the plant with, no account and no network."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.sim.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="sim",
    options=Options,
    session="streamctl.ingest.vendors.sim.session:Session",
    parser="streamctl.ingest.vendors.sim.generator:SimGenerator",
    venue=None,
    reason_without_venue="the simulator generates its events in-process; there is no wire protocol to serve",
    needs_symbols=True,
    live=False,
    docs="README.md",
    warm_up="streamctl.ingest.vendors.sim.session:warm_up",
)
