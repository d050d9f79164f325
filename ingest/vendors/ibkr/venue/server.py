"""The venue's TCP server: a listener thread and one thread per API client."""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Literal

from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.venue.connection import TICK, Failure, Serving, VenueConnection
from streamctl.ingest.vendors.ibkr.venue.tape import Tape, load_tape
from streamctl.ingest.venue_listener import listen_tcp

__all__ = ["IbkrVenue"]


class IbkrVenue:
    """A local TWS / IB Gateway serving `files` on ``host:port`` (``port=0`` picks a free port).

    Parameters
    ----------
    files
        Any files `streamctl replay` reads; their symbols become the venue's contracts.
    speed
        ``"max"`` or a factor of real time, by ``ts_event`` (gaps over `max_gap` s shortened).
    loop
        Play each subscription again from the start when it ends.
    server_version
        The highest API version the venue answers (``MIN_VERSION``..``MAX_VERSION``).
    failure
        A failure to inject (`Failure`); `not_subscribed`: symbols refused market data.
    """

    def __init__(
        self,
        files: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: Literal["max"] | float = "max",
        loop: bool = False,
        server_version: int = api.MAX_VERSION,
        failure: Failure | None = None,
        not_subscribed: frozenset[str] = frozenset(),
        futures_exchange: str = "CME",
        max_gap: float = 5.0,
        tape: Tape | None = None,
    ) -> None:
        if not files and tape is None:
            raise ValueError("`files` must name at least one file")
        if speed != "max" and not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"`speed` must be 'max' or a number > 0, was {speed!r}")
        if not api.MIN_VERSION <= server_version <= api.MAX_VERSION:
            raise ValueError(f"`server_version` must be in {api.MIN_VERSION}..{api.MAX_VERSION}, was {server_version}")
        self.serving = Serving(
            tape=tape if tape is not None else load_tape(files, futures_exchange=futures_exchange, max_gap=max_gap),
            speed=speed, loop=loop, server_version=server_version, failure=failure, not_subscribed=not_subscribed,
        )
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.connections: list[VenueConnection] = []
        """Every connection so far (the live ones and the ended ones), in order."""

    @property
    def tape(self) -> Tape:
        return self.serving.tape

    def start(self) -> None:
        """Bind and serve in a background thread; `port` holds the bound port afterwards."""
        if self._listener is not None:
            raise RuntimeError("venue already started")
        listener = listen_tcp(self.host, self.port, accept_timeout=TICK)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, name=f"ibkr-accept:{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Close the listener and every connection, and wait for their threads."""
        self._stop.set()
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            connection.abort()
        for thread in list(self._threads):
            thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> IbkrVenue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            connection = VenueConnection(self.serving, conn, next(self._numbers))
            thread = threading.Thread(target=connection.run, name=f"ibkr-{connection.number}", daemon=True)
            with self._lock:
                self.connections.append(connection)
                self._threads.append(thread)
            thread.start()
        self._listener.close()
