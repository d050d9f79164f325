"""CME MDP 3.0: UDP multicast A/B feeds, SBE decoded from the schema, gap recovery from the snapshot loop."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.cme.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="cme",
    options=Options,
    session="streamctl.ingest.vendors.cme.session:Session",
    parser="streamctl.ingest.vendors.cme.decoder:Decoder",
    venue="streamctl.ingest.vendors.cme.venue:command",
    needs_symbols=True,
    live=True,
    docs="docs/cme.md",
    warm_up="streamctl.ingest.vendors.cme.warm_up:warm_up",
)
