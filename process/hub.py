"""The hub process: the plant's one public endpoint.

Every publisher in the plant (workers, feeds' events, the supervisor's status) connects to
the hub's internal XSUB; subscribers connect to its public XPUB, so they see one endpoint
whatever the number of workers. The forwarding runs in ZeroMQ's C proxy on a thread; the
main thread only heartbeats.
"""

from __future__ import annotations

import os
import time

import msgspec

from streamctl.process.lifecycle import setup_child

__all__ = ["HubSpec", "run_hub", "hub_main"]


class HubSpec(msgspec.Struct, kw_only=True, frozen=True):
    plant: str
    slot: int
    stats: str
    internal: str
    """Internal endpoint (XSUB bind), e.g. ipc:///tmp/streamctl-0/demo.pub."""
    public: str
    """Public endpoint (XPUB bind) from `publish.endpoint`."""
    sndhwm: int = 100_000
    cpu: int | None = None


def run_hub(spec: HubSpec) -> int:
    from streamctl.process.proxy import Proxy
    from streamctl.shm.stats import ProcessTable, State

    stop = setup_child("hub", spec.cpu)
    table = ProcessTable.attach(spec.stats)
    slot = table.slot(spec.slot)
    slot.set("pid", os.getpid())
    slot.set("started_ns", time.time_ns())
    slot.set("cpu", -1 if spec.cpu is None else spec.cpu)
    slot.set("state", State.STARTING)
    slot.heartbeat()
    proxy = Proxy(frontend=spec.internal, backend=spec.public, sndhwm=spec.sndhwm)
    code = 0
    try:
        proxy.start()
        slot.set("state", State.READY)
        while not stop:
            slot.heartbeat()
            stats = proxy.stats()
            if stats is not None:  # what the hub forwarded, for `status`
                slot.set("records_in", stats.messages_forwarded)
                slot.set("records_out", stats.messages_forwarded)
            time.sleep(0.05)
        slot.set("state", State.STOPPING)
    except Exception as exc:
        slot.set("detail", f"{type(exc).__name__}: {exc}"[:95])
        code = 2
    finally:
        proxy.stop()
        slot.set("state", State.EXITED if code == 0 else State.FAILED)
        slot.heartbeat()
        table.close()
    return code


def hub_main(spec: HubSpec) -> None:
    raise SystemExit(run_hub(spec))
