"""Imported once by the supervisor's forkserver, before any child is forked from it.

Everything a plant child needs is imported here, and the numba kernels (calculators, the
journal's page-faulting loop, the publishers' batch sends and raw-trade packer, the vendors'
decoders: every registered vendor's, or those named in `forkserver.WARM_VENDORS`; not the
live-only ones for a replay, `forkserver.WARM_LIVE`: 3-5 ms each) are compiled or loaded from
numba's on-disk cache here (and the rings' doorbell fence compiled), so a forked child inherits ready machine code: a restarted worker or feed is
serving again in a fraction of a second instead of paying the kernel load (or a first
compile of ~10 s) itself.

The garbage collector is off while this runs: the imports and numba's first-use set-up
create about 170,000 objects that live as long as the process, and collecting them as they
came (257 collections) cost 0.12-0.37 s of the preload, which is the longest part of a
replay's start-up. They are then frozen, so no collection in the forkserver or a child walks
them again (nor writes to their pages, which a child shares with the forkserver until then).
"""

# ruff: noqa: E402  (the collector is paused before the imports)
from __future__ import annotations

import gc

gc.disable()

import os
import time

import streamctl.bus.hub  # noqa: F401  (imported for the children)
import streamctl.bus.publisher  # noqa: F401
import streamctl.ingest.feed  # noqa: F401
import streamctl.process.worker  # noqa: F401
import streamctl.shm.registry  # noqa: F401
import streamctl.shm.ring  # noqa: F401
from streamctl.bus.native_recv import warm_up as warm_up_receives
from streamctl.bus.native_send import warm_up as warm_up_sends
from streamctl.bus.native_trades import warm_up as warm_up_trades
from streamctl.cli.forkserver import WARM_LIVE, WARM_VENDORS
from streamctl.ingest.routing import warm_up as warm_up_routing
from streamctl.ingest.vendor_api import resolve
from streamctl.ingest.vendors import VENDORS, vendor_spec
from streamctl.process.calc.engine import warm_up as warm_up_calculators
from streamctl.process.journal.mapped import warm_up as warm_up_journal
from streamctl.process.latency import warm_up as warm_up_latency
from streamctl.process.symbol_map import warm_up as warm_up_symbol_map
from streamctl.shm.doorbell import fence

__all__ = ["SECONDS"]


def _vendor_warm_ups() -> list[str]:
    """The warm-up references of the vendors to load (`WARM_VENDORS`, else all), each once."""
    named = os.environ.get(WARM_VENDORS)
    specs = VENDORS.values() if named is None else [vendor_spec(name) for name in named.split(",") if name]
    return list(dict.fromkeys(spec.warm_up for spec in specs if spec.warm_up))


def _warm_all() -> float:
    start = time.perf_counter()
    warm_up_calculators()
    if os.environ.get(WARM_LIVE) != "0":
        warm_up_latency()
        warm_up_journal()
        warm_up_receives()
    warm_up_symbol_map()
    warm_up_sends()
    warm_up_trades()
    fence()  # the rings' doorbell compiles its memory fence on first use
    warm_up_routing()  # the feed's screen (validation and routing in one pass)
    for reference in _vendor_warm_ups():
        resolve(reference)()
    return time.perf_counter() - start


try:
    SECONDS = _warm_all()
    """How long compiling or loading the kernels took in this process."""
finally:
    gc.freeze()
    gc.enable()
