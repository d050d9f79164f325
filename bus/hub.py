"""The hub process: the plant's one public endpoint.

Every publisher in the plant (workers, feeds' events, the supervisor's status) connects to
the hub's internal XSUB; subscribers connect to its public XPUB, so they see one endpoint
whatever the number of workers. The forwarding runs in ZeroMQ's C proxy on a thread; the
main thread only heartbeats. Connections refused for an unknown CURVE key count as ``errors``.
"""

from __future__ import annotations

import logging
import os

import msgspec
import zmq

from streamctl.bus.curve import CurveServer
from streamctl.bus.history import HistoryConfig
from streamctl.bus.lifecycle import ChildSlot, setup_child
from streamctl.shm.stats import CounterName

__all__ = ["HubSpec", "run_hub", "hub_main"]

log = logging.getLogger("streamctl.hub")


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
    internal_curve: CurveServer | None = None
    """The plant's keys for the internal endpoint (fresh per run, never on disk)."""
    public_curve: CurveServer | None = None
    """``publish.curve``, loaded: CURVE on the public endpoint for remote subscribers."""
    recovery: str | None = None
    """The public recovery endpoint (`streamctl.bus.recovery`); None: no recovery service."""
    recovery_bytes: int = 4 << 20
    """Per topic, payload bytes of recent messages the recovery service keeps."""
    history: HistoryConfig | None = None
    """The output journal's settings; None: history from memory only."""
    history_dir: str | None = None
    """Where the output journal's files go (``<data dir>/history``)."""
    run: int = 0
    """The plant run (the supervisor's start, ns): `from_seq` history is per run."""


def run_hub(spec: HubSpec) -> int:
    from streamctl.bus.proxy import Proxy
    from streamctl.bus.recovery import RecoveryService, service_binds

    stop = setup_child("hub", spec.cpu)
    child = ChildSlot(spec.stats, spec.slot, spec.cpu)
    slot = child.slot
    capture = None if spec.recovery is None else f"inproc://streamctl-capture-{os.getpid()}"
    proxy = Proxy(frontend=spec.internal, backend=spec.public, sndhwm=spec.sndhwm,
                  frontend_curve=spec.internal_curve, backend_curve=spec.public_curve, capture=capture)
    service = None
    code = 0
    try:
        proxy.start()
        if spec.recovery is not None and capture is not None and proxy.context is not None:
            service = RecoveryService(proxy.context, capture=capture, topic_bytes=spec.recovery_bytes,
                                      history=spec.history, history_dir=spec.history_dir, run=spec.run,
                                      binds=service_binds(internal=spec.internal, public=spec.recovery,
                                                          internal_curve=spec.internal_curve,
                                                          public_curve=spec.public_curve))
            try:
                service.start()
                slot.set("detail", f"recovery at {spec.recovery}")
            except (zmq.ZMQError, TimeoutError) as exc:  # forwarding matters more than history
                service = None
                log.error("hub: recovery service not started (%s at %s); forwarding without it", exc, spec.recovery)
                slot.set("detail", f"recovery unavailable: {exc}")
        child.ready()
        while not stop:
            slot.heartbeat()
            stats = proxy.stats()
            if stats is not None:  # what the hub forwarded, for `status`; it sends all it receives
                slot.set(CounterName.RECORDS_IN, stats.messages_forwarded)
                slot.set(CounterName.RECORDS_OUT, stats.messages_forwarded)
                slot.set(CounterName.ERRORS, stats.refused)
            stop.wait(0.05)
        child.stopping()
    except Exception as exc:
        child.crashed(exc)
        code = 2
    finally:
        if service is not None:
            service.stop()
        proxy.stop()
        child.close(failed=code != 0)
    return code


def hub_main(spec: HubSpec) -> None:
    raise SystemExit(run_hub(spec))
