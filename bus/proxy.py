"""The plant's one public endpoint: an XSUB/XPUB proxy.

Every worker's PUB socket connects to the proxy's internal XSUB (an ``ipc://`` socket in a
private runtime directory), and every subscriber connects to the proxy's public XPUB
(``publish.endpoint``). Subscribers therefore see one endpoint however many workers there
are, and subscriptions flow upstream so workers' PUB sockets filter at the source.

The proxy loop is libzmq's ``zmq_proxy_steerable`` running in a background thread; it is
stopped with ``TERMINATE`` on its control socket and asked for counters with
``STATISTICS``. `serve` runs a proxy as the body of its own process.

Only the plant's own processes may publish: given `frontend_curve`, the XSUB is a CURVE server
whose gatekeeper (`streamctl.bus.curve`) lets in the plant's one client key. Before forwarding,
the XSUB subscribes to `wire.SYNC_SUBSCRIPTION`, which ZeroMQ sends to every publisher that
connects, after the subscribers' own: a publisher that has received it can publish without
losing its first messages to the slow joiner (`Publisher.wait_subscribed`).
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import socket
import struct
import threading
from typing import Any, NamedTuple, Protocol

import zmq

from streamctl.bus import wire
from streamctl.bus.curve import INTERNAL_DOMAIN, PUBLIC_DOMAIN, CurveServer, Gatekeeper

__all__ = [
    "Proxy",
    "ProxyBindError",
    "ProxyStats",
    "serve",
]

_IPC_PATH_MAX = 107
"""Longest path a Unix domain socket accepts (``sun_path`` minus the NUL)."""

_control_ids = itertools.count(1)


class ProxyBindError(OSError):
    """The proxy could not bind one of its endpoints (port taken, bad path...)."""

    def __init__(self, role: str, endpoint: str, reason: str):
        super().__init__(f"cannot bind the proxy {role} `{endpoint}`: {reason}")
        self.role = role
        self.endpoint = endpoint
        self.reason = reason


_CAPTURE_HWM = 500_000
"""Messages queued for the recovery service at most (beyond, it misses them and says so)."""


class ProxyStats(NamedTuple):
    """Counters of a running proxy, from libzmq's ``STATISTICS`` command.

    ``messages_forwarded`` counts bus messages (topic frame + payload frame) that went from
    publishers to subscribers; ``subscriptions_in`` counts subscription messages that went
    the other way. Publishers filter at the source, so only messages some
    subscriber asked for reach the proxy: with nobody subscribed it forwards nothing.
    ``refused`` counts connections turned away for an unknown CURVE key (either endpoint).
    """

    messages_forwarded: int
    subscriptions_in: int
    refused: int = 0


_FRAMES_PER_COUNT = 2 if zmq.zmq_version_info() >= (4, 3, 5) else 1
"""Frames behind one count of a forwarding counter: libzmq 4.3.5 counts every frame, and
every bus message is two (`streamctl.bus.wire`); earlier versions counted whole messages.
Subscriptions are single frames, so their counts are messages in both."""


def _check_ipc_free(role: str, endpoint: str) -> None:
    """Refuse an ``ipc://`` path that a live process is listening on.

    libzmq unlinks an existing socket file before binding, which would silently steal the
    endpoint from a running plant; a stale file (nobody listening) is fine to replace.
    """
    path = endpoint[len("ipc://") :]
    if path.startswith("@") or path == "*":  # abstract namespace / wildcard: nothing on disk
        return
    if len(path.encode()) > _IPC_PATH_MAX:
        raise ProxyBindError(role, endpoint, f"path is longer than {_IPC_PATH_MAX} bytes")
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except OSError as exc:
        raise ProxyBindError(role, endpoint, f"cannot probe existing socket file: {exc}") from exc
    finally:
        probe.close()
    raise ProxyBindError(role, endpoint, "another process is listening on it")


def _bind(sock: zmq.Socket, role: str, endpoint: str) -> str:
    if endpoint.startswith("ipc://"):
        _check_ipc_free(role, endpoint)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ProxyBindError(role, endpoint, reason) from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class Proxy:
    """XSUB (``frontend``, internal, publishers connect) to XPUB (``backend``, public).

    Parameters
    ----------
    frontend
        Endpoint the XSUB binds, e.g. ``streamctl.cli.runtime.internal_endpoint("demo")``.
    backend
        Endpoint the XPUB binds: ``publish.endpoint``, e.g. ``tcp://127.0.0.1:5555``.
        A wildcard port (``tcp://127.0.0.1:*``) is allowed; read `backend_endpoint`.
    sndhwm
        Per-subscriber high-water mark of the XPUB (messages; 0 = unlimited). A subscriber
        that falls this far behind loses messages, which it sees as sequence gaps.
    frontend_curve, backend_curve
        CURVE server keys of each endpoint (None: no authentication). The plant always
        gives `frontend_curve` (`streamctl.bus.curve.plant_keys`); `backend_curve` comes
        from ``publish.curve``.

    `start`, `stop` and `stats` must be called from one thread (the one owning the proxy).
    """

    def __init__(self, *, frontend: str, backend: str, sndhwm: int, frontend_curve: CurveServer | None = None,
                 backend_curve: CurveServer | None = None, capture: str | None = None):
        if sndhwm < 0:
            raise ValueError(f"`sndhwm` must be >= 0; was {sndhwm}")
        self.frontend = frontend
        self.backend = backend
        self.sndhwm = sndhwm
        self.frontend_endpoint: str | None = None
        """The bound internal endpoint (wildcards resolved), set by `start`."""
        self.backend_endpoint: str | None = None
        """The bound public endpoint (wildcards resolved), set by `start`."""
        self.capture = capture
        """An ``inproc://`` endpoint where a PUB socket repeats every forwarded message (the
        recovery service reads it), or None."""
        self._context: zmq.Context | None = None
        self._control: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._control_addr = f"inproc://streamctl-proxy-control-{os.getpid()}-{next(_control_ids)}"
        self._error: BaseException | None = None
        self._curves = {domain: curve for domain, curve in ((INTERNAL_DOMAIN, frontend_curve),
                                                            (PUBLIC_DOMAIN, backend_curve)) if curve is not None}
        self._gatekeeper: Gatekeeper | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind both endpoints and start forwarding in a background thread.

        Raises `ProxyBindError` naming the endpoint when one cannot be bound; nothing is
        left bound or running in that case.
        """
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._context = zmq.Context()
        if self._curves:  # the ZAP handler must answer before the first peer connects
            self._gatekeeper = Gatekeeper(self._context, self._curves)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"streamctl-proxy {self.backend}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"proxy did not bind `{self.backend}` within {timeout} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            self._close_context()
            raise self._error
        self._control = self._context.socket(zmq.PAIR)
        self._control.linger = 0
        self._control.connect(self._control_addr)

    def _run(self, ready: threading.Event) -> None:
        """Thread body: sockets are created, used and closed in this thread only."""
        assert self._context is not None
        ctx = self._context
        sockets: list[zmq.Socket] = []
        try:
            front = ctx.socket(zmq.XSUB)
            back = ctx.socket(zmq.XPUB)
            control = ctx.socket(zmq.PAIR)
            sockets += [front, back, control]
            capture = None
            if self.capture is not None:
                capture = ctx.socket(zmq.PUB)
                sockets.append(capture)
                # The recovery service's queue: deep enough for any burst it can catch up with, but
                # bounded, so a service that cannot keep up costs history (a gap it reports), not memory.
                capture.sndhwm = _CAPTURE_HWM
                capture.bind(self.capture)
            for sock in sockets:
                sock.linger = 0
            front.rcvhwm = self.sndhwm
            front.sndhwm = 0  # subscriptions only: a publisher must get all of them, the sync last
            back.sndhwm = self.sndhwm
            for sock, domain in ((front, INTERNAL_DOMAIN), (back, PUBLIC_DOMAIN)):
                if domain in self._curves:
                    self._curves[domain].apply(sock, domain)
            # Public side first: it is the one most likely to be taken.
            self.backend_endpoint = _bind(back, "backend", self.backend)
            self.frontend_endpoint = _bind(front, "frontend", self.frontend)
            control.bind(self._control_addr)
            if capture is not None:  # the recovery service keeps every topic: publishers must send all of them
                front.send(b"\x01")
            front.send(b"\x01" + wire.SYNC_SUBSCRIPTION)
        except BaseException as exc:  # reported to start(), which raises it
            self._error = exc
            for sock in sockets:
                sock.close()
            ready.set()
            return
        ready.set()
        try:
            zmq.proxy_steerable(front, back, capture, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in sockets:
                sock.close()

    @property
    def context(self) -> zmq.Context | None:
        """The proxy's context (its CURVE gatekeeper answers for every socket in it)."""
        return self._context

    def stats(self) -> ProxyStats | None:
        """Forwarding counters, or None when the proxy is not running."""
        if self._control is None or not self.running:
            return None
        self._control.send(b"STATISTICS")
        if not self._control.poll(2000):
            return None
        frames = self._control.recv_multipart()
        # Frontend: received (count, bytes), sent (count, bytes); then the same for the backend.
        front_in, _, _, _, back_in, _, _, _ = (struct.unpack("=Q", frame)[0] for frame in frames)
        refused = 0 if self._gatekeeper is None else self._gatekeeper.refused
        return ProxyStats(messages_forwarded=front_in // _FRAMES_PER_COUNT, subscriptions_in=back_in, refused=refused)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding, close every socket and unbind. Idempotent."""
        thread, self._thread = self._thread, None
        control, self._control = self._control, None
        try:
            if control is not None and thread is not None and thread.is_alive():
                control.send(b"TERMINATE")
            if thread is not None:
                # Close the control socket only after the proxy has read TERMINATE: closing
                # with linger 0 would discard the unread command.
                thread.join(timeout)
                if thread.is_alive():
                    raise TimeoutError(f"proxy thread for `{self.backend}` did not stop within {timeout} s")
        finally:
            if control is not None:
                control.close()
        self._close_context()

    def _close_context(self) -> None:
        if self._gatekeeper is not None:
            self._gatekeeper.stop()
            self._gatekeeper = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Sender(Protocol):
    def send(self, obj: Any) -> None: ...


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


def serve(*, frontend: str, backend: str, sndhwm: int, ready: _Sender | None = None,
          stop: _Waitable | None = None, frontend_curve: CurveServer | None = None,
          backend_curve: CurveServer | None = None) -> None:
    """Run a proxy as the body of a process until `stop` is set or SIGTERM/SIGINT arrives.

    `ready` (a multiprocessing ``Connection`` or queue) receives
    ``("ok", frontend_endpoint, backend_endpoint)`` once bound, or ``("error", message)``
    if binding failed (then `serve` returns without raising). The curves are those of `Proxy`.
    """
    proxy = Proxy(frontend=frontend, backend=backend, sndhwm=sndhwm, frontend_curve=frontend_curve,
                  backend_curve=backend_curve)
    try:
        proxy.start()
    except (ProxyBindError, OSError, zmq.ZMQError) as exc:
        if ready is None:
            raise
        ready.send(("error", str(exc)))
        return
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if ready is not None:
        ready.send(("ok", proxy.frontend_endpoint, proxy.backend_endpoint))
    try:
        while not done.is_set():
            if stop is not None:
                if stop.wait(0.1):
                    break
            else:
                done.wait(0.1)
    finally:
        proxy.stop()
