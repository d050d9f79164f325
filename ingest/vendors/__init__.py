"""The vendor registry: every feed vendor and the small face each one exposes.

A vendor module (``streamctl.ingest.vendors.<name>``) has:

- ``Options``: a frozen msgspec Struct of its ``feeds[i].options`` (validated at config load;
  it may define ``check() -> (field, message, value) | None`` for rules a type cannot express);
- ``Session(options, feed, ctx)``: connects/opens its input and yields record batches through
  ``open()``, ``poll(timeout) -> ndarray | None``, ``close()`` (see `streamctl.ingest.session`).

Adding a vendor means adding one module of that shape and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["VendorSpec", "VENDORS", "vendor_spec", "vendor_module"]


@dataclass(frozen=True)
class VendorSpec:
    name: str
    module: str
    needs_symbols: bool
    """Whether ``feeds[i].symbols`` is required (live vendors subscribe to symbols)."""
    live: bool
    """Live vendors run under the reconnect policy; file replay does not reconnect."""

    @property
    def options_type(self) -> type:
        return vendor_module(self.name).Options


VENDORS: dict[str, VendorSpec] = {
    spec.name: spec
    for spec in (
        VendorSpec("sim", "streamctl.ingest.vendors.sim", needs_symbols=True, live=False),
        VendorSpec("replay", "streamctl.ingest.vendors.replay", needs_symbols=False, live=False),
        VendorSpec("databento", "streamctl.ingest.vendors.databento", needs_symbols=True, live=True),
    )
}


def vendor_spec(name: str) -> VendorSpec:
    try:
        return VENDORS[name]
    except KeyError:
        raise ValueError(f"`vendor` must be one of {', '.join(VENDORS)}; was {name}") from None


def vendor_module(name: str) -> ModuleType:
    return importlib.import_module(vendor_spec(name).module)
