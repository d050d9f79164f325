"""Helpers shared by test_publish.py and test_client.py: a proxy in a spawned process,
publisher processes, and handshakes that replace sleeping for the slow joiner."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time

from _common import wait_until  # re-exported: test_publish and test_client take it from here

from streamctl.bus import wire
from streamctl.bus.proxy import serve
from streamctl.bus.publisher import Publisher

CTX = mp.get_context("spawn")
START_TIMEOUT = 60.0
"""Spawning Python and importing zmq/numpy can take seconds on two busy cores."""


class ProxyProcess:
    """`streamctl.bus.proxy.serve` in a spawned process, stopped for sure on exit."""

    def __init__(self, *, backend: str = "tcp://127.0.0.1:*", sndhwm: int = 100_000, frontend: str | None = None):
        self._dir: str | None = None
        if frontend is None:
            self._dir = tempfile.mkdtemp(prefix="sc-", dir="/tmp")
            frontend = f"ipc://{self._dir}/front.ipc"
        self.frontend = frontend
        self.backend = backend
        self.sndhwm = sndhwm
        self.proc: mp.process.BaseProcess | None = None
        self._stop = CTX.Event()

    def start(self) -> ProxyProcess:
        parent, child = CTX.Pipe(duplex=False)
        self.proc = CTX.Process(
            target=serve,
            kwargs=dict(frontend=self.frontend, backend=self.backend, sndhwm=self.sndhwm, ready=child, stop=self._stop),
            daemon=True,
        )
        self.proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT):
            self.stop()
            raise AssertionError("proxy process did not report ready")
        status = parent.recv()
        parent.close()
        if status[0] != "ok":
            self.stop()
            raise AssertionError(f"proxy failed: {status[1]}")
        _, self.frontend, self.backend = status
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def probe(src: str) -> tuple[str, wire.Event]:
    """The handshake message a publisher repeats until its subscriber has seen it."""
    return wire.topic("event", src), wire.Event(source=src, kind=wire.EventKind.PROBE, message="", ts=time.time_ns())


def publisher_main(endpoint: str, src: str, items: list[tuple[str, object]], go, timeout: float = 60.0) -> None:
    """Body of a spawned publisher: probe until `go` is set, then publish `items` and close.

    A list payload is sent with `publish_batch`, anything else with `publish`.
    """
    with Publisher(endpoint, src=src) as pub:
        deadline = time.monotonic() + timeout
        while not go.wait(0.02):
            if time.monotonic() > deadline:
                raise SystemExit(f"{src}: nobody subscribed within {timeout} s")
            pub.publish(*probe(src))
        for topic, payload in items:
            if isinstance(payload, list):
                pub.publish_batch(topic, payload)
            else:
                pub.publish(topic, payload)  # type: ignore[arg-type]


def reap(*procs: mp.process.BaseProcess) -> None:
    """Join processes, killing any still running."""
    for p in procs:
        p.join(20)
        if p.is_alive():
            p.kill()
            p.join(5)


__all__ = [
    "CTX",
    "ProxyProcess",
    "wait_until",
    "probe",
    "publisher_main",
    "reap",
]
