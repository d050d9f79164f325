"""The venue's WebSocket server: an asyncio event loop in a thread of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from streamctl.ingest.vendors.alpaca.codes import CODES
from streamctl.ingest.vendors.alpaca.options import STREAM_PATHS
from streamctl.ingest.vendors.alpaca.venue.connection import VenueConnection
from streamctl.ingest.vendors.alpaca.venue.injection import Injection
from streamctl.ingest.vendors.alpaca.venue.stream import Shape, Stream, load_stream

__all__ = ["AlpacaVenue", "Serving"]

log = logging.getLogger(__name__)

_SHAPES: dict[str, Shape] = {path: ("crypto" if feed == "crypto" else "stocks") for feed, path in STREAM_PATHS.items()}
_SHAPES["/v2/test"] = "stocks"
_CLOSE_TIMEOUT_S = 1.0
"""How long stopping the venue waits for each client's closing handshake; a connection that went
silent on purpose (the `silence` injection) never answers it."""


@dataclass
class Serving:
    """What every connection of one venue serves, and how (see `AlpacaVenue`)."""

    stream: Stream
    speed: Literal["max"] | float
    loop: bool
    max_gap: float
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    auth_error: int | None = None
    connection_limit: int = 0


class AlpacaVenue:
    """A local Alpaca market-data stream serving `files` on ``host:port`` (``port=0``: a free one).

    Parameters
    ----------
    files
        Any file ``streamctl replay`` reads (DBN, CSV, Parquet), served under its own symbols.
    key, secret
        If set, only these authenticate; if None, any non-empty pair does.
    speed
        ``"max"`` or a factor of real time for pacing by ``ts_event``.
    loop
        Serve the files again from the start when they end (default: stay connected, quiet).
    injections
        Failures to cause (`injection.Injection`), each once.
    auth_error
        Refuse every authentication with this error code (402, 406, 409, 411...).
    connection_limit
        Authenticated connections allowed at once (0: any); one more gets error 406.
    max_gap
        Longest wait, in seconds of data time, between two messages when pacing.

    The stream position is the venue's, not a connection's: a client that reconnects carries on
    where the last connection stopped, as on a live feed (nothing is sent twice).
    """

    def __init__(self, files: list[str], *, host: str = "127.0.0.1", port: int = 0, key: str | None = None,
                 secret: str | None = None, speed: Literal["max"] | float = "max", loop: bool = False,
                 injections: list[Injection] | None = None, auth_error: int | None = None,
                 connection_limit: int = 0, max_gap: float = 5.0) -> None:
        if not files:
            raise ValueError("`files` must name at least one file")
        if speed != "max" and not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"`speed` must be 'max' or a number > 0, was {speed!r}")
        if auth_error is not None and auth_error not in CODES:
            raise ValueError(f"`auth_error` must be a documented code ({', '.join(map(str, CODES))}); was {auth_error}")
        stream = load_stream(files)
        for injection in injections or []:
            if injection.kind in ("correct", "cancel") and stream.items[injection.arg].tag != "t":
                raise ValueError(f"`--inject {injection.kind}:{injection.arg}` must name a trade; message "
                                 f"{injection.arg} is `{stream.items[injection.arg].tag}`")
        self.serving = Serving(stream, speed, loop, max_gap, key, secret, auth_error, connection_limit)
        self.host, self.port = host, port
        self._injections: dict[int, list[Injection]] = {i.at: [] for i in injections or []}
        for injection in injections or []:
            self._injections[injection.at].append(injection)
        self.position = 0
        """Data messages of the stream served so far (the next connection starts here)."""
        self.records_sent = 0
        self.sessions_started = 0
        self.authenticated = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        """(path, headers) of every upgrade request, for tests."""
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def take_injection(self, position: int) -> Injection | None:
        """The next failure due before message `position`, removed so it fires once."""
        due = self._injections.get(position)
        return due.pop(0) if due else None

    # ---- lifecycle
    def start(self) -> None:
        """Bind and serve in a background thread; `port` holds the bound port afterwards."""
        if self._thread is not None:
            raise RuntimeError("venue already started")
        self._thread = threading.Thread(target=self._run, name="alpaca-venue", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> AlpacaVenue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to `start`, which raises it
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, self.host, self.port, process_request=self._check_path,
                         max_size=1 << 20, ping_interval=None, close_timeout=_CLOSE_TIMEOUT_S) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close(close_connections=True)

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append((request.path, dict(request.headers.raw_items())))
        if request.path.split("?")[0] not in _SHAPES:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no stream at {request.path}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        shape = _SHAPES[ws.request.path.split("?")[0]]
        msgpack = ws.request.headers.get("Content-Type", "").startswith("application/msgpack")
        connection = VenueConnection(self, ws, shape, "msgpack" if msgpack else "json")
        self.sessions_started += 1
        try:
            await connection.run()
        except Exception:  # noqa: BLE001 - one client's failure never stops the venue
            log.exception("connection failed")
        finally:
            if connection.counted:
                self.authenticated -= 1
