"""The vendor registry: every folder below this one that exports a `VendorSpec` as ``SPEC``.

A vendor is one folder, ``ingest/vendors/<name>/``, with the same face: ``options.py`` (its
``feeds[i].options`` struct), ``session.py`` (connect / poll / close, yielding record batches),
its parsing, its local venue (``venue.py``, for vendors with a wire protocol) and, in
``__init__.py``, the one ``SPEC`` that names them. Adding a vendor means adding a folder of
that shape; nothing else lists vendors. ``tests/test_vendor_face.py`` walks this registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from streamctl.ingest.vendor_api import VendorSpec

__all__ = ["VENDORS", "vendor_spec"]


def _discover() -> dict[str, VendorSpec]:
    found: dict[str, VendorSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if not isinstance(spec, VendorSpec):
            raise ImportError(f"vendor folder `{info.name}` must export a VendorSpec as SPEC")
        if spec.name != info.name:
            raise ImportError(f"vendor folder `{info.name}` registers itself as `{spec.name}`")
        found[spec.name] = spec
    return found


VENDORS: dict[str, VendorSpec] = _discover()
"""Every registered vendor by name, in alphabetical order."""


def vendor_spec(name: str) -> VendorSpec:
    try:
        return VENDORS[name]
    except KeyError:
        raise ValueError(f"`vendor` must be one of {', '.join(VENDORS)}; was {name}") from None
