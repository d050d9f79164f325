"""Databento live: the live subscription gateway protocol (CRAM, subscriptions, DBN stream)."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.databento.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="databento",
    options=Options,
    session="streamctl.ingest.vendors.databento.session:Session",
    parser="streamctl.ingest.formats.dbn.decoder:DbnDecoder",
    venue="streamctl.ingest.vendors.databento.venue:command",
    needs_symbols=True,
    live=True,
    docs="docs/databento.md",
    warm_up="streamctl.ingest.formats.dbn.warm_up:warm_up",
)
