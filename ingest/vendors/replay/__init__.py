"""Recorded files (DBN, CSV, Parquet) played into the plant at a chosen speed."""

from streamctl.ingest.vendor_api import VendorSpec
from streamctl.ingest.vendors.replay.options import Options

# Every vendor folder declares its SPEC in this one shape (the registry and the vendor-face
# test read it); only the values differ, so the repetition across folders is the point.
SPEC = VendorSpec(
    name="replay",
    options=Options,
    session="streamctl.ingest.vendors.replay.session:Session",
    parser="streamctl.ingest.vendors.replay.sources:DbnSource",
    venue=None,
    reason_without_venue="files are read directly; serving them over a vendor's protocol is that vendor's venue",
    needs_symbols=False,
    live=False,
    docs="docs/replay.md",
    warm_up="streamctl.ingest.formats.dbn.warm_up:warm_up",
)
