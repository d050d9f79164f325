"""The gateway's TCP server: a listener thread and one thread per client connection."""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Literal

from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.venue.connection import TICK, Serving, VenueConnection
from streamctl.ingest.vendors.databento.venue.files import DatasetData, load_datasets
from streamctl.ingest.venue_listener import listen_tcp

__all__ = ["DatabentoVenue"]


class DatabentoVenue:
    """A local LSG serving `files` on ``host:port`` (``port=0`` picks a free port).

    Parameters
    ----------
    files
        DBN files (``.dbn`` or ``.dbn.zst``, v1-v3); files of one dataset must share a version.
    api_key
        If set, only this key authenticates; if None, any well-formed CRAM response does.
    speed
        ``"max"`` or a factor of real time for pacing by ``ts_event``.
    heartbeat_interval
        Seconds of silence before a heartbeat (the client's shorter request wins).
    loop, close_at_end
        At the end of the data: serve the files again, or close the session
        (default: keep it open with heartbeats).
    max_gap
        Longest wait, in seconds of data time, between two records when pacing.
    """

    def __init__(
        self,
        files: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        speed: Literal["max"] | float = "max",
        heartbeat_interval: float = 30.0,
        loop: bool = False,
        close_at_end: bool = False,
        max_gap: float = 5.0,
    ) -> None:
        if not files:
            raise ValueError("`files` must name at least one DBN file")
        if speed != "max" and not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"`speed` must be 'max' or a number > 0, was {speed!r}")
        if heartbeat_interval <= 0:
            raise ValueError(f"`heartbeat_interval` must be > 0, was {heartbeat_interval}")
        if api_key is not None and len(api_key) < lsg.BUCKET_LENGTH:
            raise ValueError(f"`api_key` must be at least {lsg.BUCKET_LENGTH} characters long")
        self.serving = Serving(
            datasets=load_datasets(files),
            speed=speed,
            heartbeat_interval=float(heartbeat_interval),
            loop=loop,
            close_at_end=close_at_end,
            max_gap=max_gap,
            api_key=api_key,
        )
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: dict[int, VenueConnection] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.sessions_started = 0
        self._records_done = 0

    @property
    def datasets(self) -> dict[str, DatasetData]:
        """Dataset code -> what is served for it."""
        return self.serving.datasets

    # ---- lifecycle
    def start(self) -> None:
        """Bind and serve in a background thread; `port` holds the bound port afterwards."""
        if self._listener is not None:
            raise RuntimeError("venue already started")
        listener = listen_tcp(self.host, self.port, accept_timeout=TICK)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, name=f"lsg-accept:{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def serve(self) -> None:
        """Start and block until `stop` is called (from a signal handler or another thread)."""
        self.start()
        while not self._stop.wait(0.2):
            pass

    def stop(self) -> None:
        """Close the listener and every session, and wait for their threads."""
        self._stop.set()
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.abort()
        for thread in list(self._threads):
            thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> DatabentoVenue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._connections)

    def records_sent(self) -> int:
        """Data records written by every session so far (for tests waiting on progress)."""
        with self._lock:
            return sum(c.records_sent for c in self._connections.values()) + self._records_done

    def drop_sessions(self) -> int:
        """Failure injection: cut every client connection now (the listener stays open).
        Returns how many were cut."""
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.abort()
        return len(connections)

    # ---- internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            session_id = next(self._ids)
            connection = VenueConnection(self.serving, conn, session_id)
            thread = threading.Thread(target=self._run, args=(connection,), name=f"lsg-{session_id}", daemon=True)
            with self._lock:
                self._connections[session_id] = connection
                self._threads.append(thread)
                self.sessions_started += 1
            thread.start()
        self._listener.close()

    def _run(self, connection: VenueConnection) -> None:
        try:
            connection.run()
        finally:
            with self._lock:
                self._connections.pop(connection.session_id, None)
                self._records_done += connection.records_sent
                self._threads = [t for t in self._threads if t is not threading.current_thread()]
